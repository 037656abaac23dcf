//! The contract between the kea operator and the service it runs.
//!
//! The operator writes these environment variables into every Microservice's container, mounts
//! its volumes at these paths and probes these endpoints; kea-service reads and serves the same
//! names. Both crates (and the diagram) take them from here, so renaming one side breaks the
//! build of the other instead of a rollout. `service/tests/operator_contract.rs` starts the real
//! service binary with the container the operator renders, to prove the two still agree.
//!
//! Any other image can run as a Microservice too: it serves HTTP on the declared port (also
//! given as [`env::GENERIC_PORT`]), answers [`paths::HEALTHZ`] and [`paths::READYZ`] or has
//! its probes pointed elsewhere (`spec.probes`), and may ignore the variables it does not use.

#![warn(missing_docs)]

/// The port a Microservice serves on when its spec names none, and the service's default.
pub const DEFAULT_PORT: u16 = 8080;

/// Name of the container port and of the Service port.
pub const PORT_NAME: &str = "http";

/// The HTTP endpoints the operator's probes call.
pub mod paths {
    /// Liveness (and startup): the process can serve. Failing it restarts the container.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness: the pod may receive traffic. Failing it takes the pod out of the Service.
    pub const READYZ: &str = "/readyz";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// A consistent copy of an embedded store, `GET BACKUP/sql` (the SQLite file) or
    /// `GET BACKUP/nosql` (the redb file), with `Authorization: Bearer` and the token of
    /// [`crate::env::ADMIN_TOKEN`]. The operator's backup Jobs call it.
    pub const BACKUP: &str = "/admin/backup";
}

/// The files of the embedded stores in their directories; a restore puts a backup there.
pub mod files {
    /// The SQLite database, in [`crate::mounts::SQL_DATA`] (or the data directory).
    pub const SQLITE: &str = "relational.sqlite";
    /// The redb database, in [`crate::mounts::NOSQL_DATA`] (or the data directory).
    pub const REDB: &str = "nosql.redb";
}

/// Where the operator mounts the container's writable volumes (the root filesystem is read-only).
pub mod mounts {
    /// The data volume: the service's embedded stores when they have no claim of their own.
    pub const DATA: &str = "/data";
    /// The claim of an embedded relational store (SQLite).
    pub const SQL_DATA: &str = "/data/sql";
    /// The claim of an embedded NoSQL store (redb).
    pub const NOSQL_DATA: &str = "/data/nosql";
    /// A writable temporary directory.
    pub const TMP: &str = "/tmp";
}

/// The environment variables the operator sets and the service reads.
pub mod env {
    /// The address to listen on, `0.0.0.0:<port>`.
    pub const LISTEN: &str = "KEA_LISTEN";
    /// The Microservice's name.
    pub const SERVICE_NAME: &str = "KEA_SERVICE_NAME";
    /// The Microservice's namespace.
    pub const NAMESPACE: &str = "KEA_NAMESPACE";
    /// The declared port.
    pub const PORT: &str = "KEA_PORT";
    /// The declared port again, under the name images from elsewhere read (Cloud Run's and
    /// Heroku's convention). kea-service reads [`LISTEN`] instead.
    pub const GENERIC_PORT: &str = "PORT";
    /// The directory of the embedded stores ([`crate::mounts::DATA`]).
    pub const DATA_DIR: &str = "KEA_DATA_DIR";
    /// The directory of the embedded SQLite file, when it has a claim of its own.
    pub const SQL_DATA_DIR: &str = "KEA_SQL_DATA_DIR";
    /// The directory of the embedded redb file, when it has a claim of its own.
    pub const NOSQL_DATA_DIR: &str = "KEA_NOSQL_DATA_DIR";
    /// After SIGTERM, how long to stay up but unready (`0s`: the pod's preStop sleep does it).
    pub const SHUTDOWN_DELAY: &str = "KEA_SHUTDOWN_DELAY";
    /// How long in-flight requests get to finish after that (`spec.drainSeconds`, e.g. `10s`).
    pub const DRAIN_TIMEOUT: &str = "KEA_DRAIN_TIMEOUT";
    /// The token that opens the admin routes ([`crate::paths::BACKUP`]), from the
    /// Microservice's backup Secret; without it the service serves no admin route.
    pub const ADMIN_TOKEN: &str = "KEA_ADMIN_TOKEN";
    /// The URL of the relational store server (MariaDB), from the store's Secret.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// The URL of the NoSQL store server (Redis), from the store's Secret.
    pub const REDIS_URL: &str = "REDIS_URL";

    /// What ends the name of a variable that carries a dependency's URL.
    pub const DEPENDENCY_URL_SUFFIX: &str = "_URL";

    /// The variable that carries the URL of the dependency `name` (a Microservice name):
    /// `users` -> `USERS_URL`, `user-profiles` -> `USER_PROFILES_URL`.
    pub fn dependency_url(name: &str) -> String {
        let mut variable: String = name
            .chars()
            .map(|c| match c {
                'a'..='z' => c.to_ascii_uppercase(),
                'A'..='Z' | '0'..='9' => c,
                _ => '_',
            })
            .collect();
        variable.push_str(DEPENDENCY_URL_SUFFIX);
        variable
    }

    /// The dependency whose URL `variable` carries, the inverse of [`dependency_url`]:
    /// `USER_PROFILES_URL` -> `user-profiles`. `None` for a variable of another shape; the
    /// stores' [`DATABASE_URL`] and [`REDIS_URL`] have this shape too, so the caller also looks
    /// at the value.
    pub fn dependency_of(variable: &str) -> Option<String> {
        let name = variable.strip_suffix(DEPENDENCY_URL_SUFFIX)?;
        (!name.is_empty()).then(|| name.to_ascii_lowercase().replace('_', "-"))
    }
}

#[cfg(test)]
mod tests {
    use super::env::{dependency_of, dependency_url};

    #[test]
    fn dependency_variables_name_the_dependency() {
        assert_eq!(dependency_url("users"), "USERS_URL");
        assert_eq!(dependency_url("user-profiles"), "USER_PROFILES_URL");
        assert_eq!(
            dependency_of("USER_PROFILES_URL").as_deref(),
            Some("user-profiles")
        );
        assert_eq!(dependency_of("_URL"), None);
        assert_eq!(dependency_of("KEA_LISTEN"), None);
    }

    /// Every Microservice name (a DNS-1035 label) survives the trip through its variable, so
    /// the service reports each dependency under the name the operator was given.
    #[test]
    fn every_microservice_name_round_trips() {
        let alphabet: Vec<char> = ('a'..='z').chain('0'..='9').chain(['-']).collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            // xorshift: a fixed sequence of names, from 1 to 63 characters.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 63) as usize;
            let mut name: String = (0..len)
                .map(|i| alphabet[((seed >> (i % 8 * 8)) as usize + i * 7) % alphabet.len()])
                .collect();
            // A DNS-1035 label starts with a letter and ends with a letter or digit.
            name.replace_range(0..1, "k");
            if name.ends_with('-') {
                name.pop();
                name.push('a');
            }
            assert_eq!(
                dependency_of(&dependency_url(&name)).as_deref(),
                Some(name.as_str())
            );
        }
    }
}
