//! `kea-operator --version` names the command and the release's version (the workspace's,
//! which the chart and image tags carry too).
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn version_names_the_command_and_the_workspace_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_kea-operator"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        format!("kea-operator {}", env!("CARGO_PKG_VERSION"))
    );
}
