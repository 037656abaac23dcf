//! Storage quantities as numbers, to compare a store's declared `size` with its claim's.
//! The API server has validated both (`isQuantity` in the CRD, the claim's own validation),
//! so this reads the forms Kubernetes writes: a decimal number, optionally with an exponent
//! (`1e9`) or one suffix, binary (`Ki` .. `Ei`) or decimal (`m`, `k` .. `E`).

/// The number of bytes `quantity` stands for, or None when it is not a quantity.
pub fn bytes(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 2f64.powi(10),
        "Mi" => 2f64.powi(20),
        "Gi" => 2f64.powi(30),
        "Ti" => 2f64.powi(40),
        "Pi" => 2f64.powi(50),
        "Ei" => 2f64.powi(60),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn binary_and_decimal_suffixes_and_exponents() {
        assert_eq!(bytes("1Gi"), Some(1_073_741_824.0));
        assert_eq!(bytes("1Gi"), bytes("1024Mi"));
        assert_eq!(bytes("512Mi"), Some(536_870_912.0));
        assert_eq!(bytes("1.5Gi"), bytes("1536Mi"));
        assert_eq!(bytes("2G"), Some(2e9));
        assert_eq!(bytes("1e9"), bytes("1G"));
        assert_eq!(bytes("100"), Some(100.0));
        assert_eq!(bytes("500m"), Some(0.5));
        assert!(bytes("2Gi") > bytes("1Gi"));
        assert!(bytes("1G") < bytes("1Gi"));
    }

    #[test]
    fn what_is_not_a_quantity_is_none() {
        for text in ["", "Gi", "1 Gi", "1Xi", "one", "1e", "1.2.3Gi"] {
            assert_eq!(bytes(text), None, "{text:?}");
        }
    }
}
