//! Golden files: the children rendered from each fixture in `tests/fixtures/` must equal
//! `tests/golden/<name>.yaml`. After an intended change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test -p kea-cli --test golden` and review the diff.

use std::path::{Path, PathBuf};

fn fixture_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "yaml").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.yaml"))
}

#[test]
fn rendered_children_match_the_golden_files() {
    let names = fixture_names();
    assert!(names.len() >= 4, "expected the fixtures, found {names:?}");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for name in names {
        let input_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.yaml"));
        let input = std::fs::read_to_string(&input_path).expect("fixture is readable");
        let rendered = kea_cli::render::render_yaml(&input)
            .unwrap_or_else(|err| panic!("fixture {name} does not render: {err}"));
        let path = golden_path(&name);
        if update {
            std::fs::write(&path, &rendered).expect("golden file is writable");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != rendered {
            mismatches.push(name);
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered children differ from tests/golden/ for {mismatches:?}; if the change is intended, run \
         `UPDATE_GOLDEN=1 cargo test -p kea-cli --test golden` and review the diff"
    );
}
