//! The `entrepot` binary as a user runs it.

use crate::support::root;
use std::process::Command;

fn entrepot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_entrepot"));
    c.current_dir(root());
    c
}

#[test]
fn validate_platforms_is_silent_and_succeeds() {
    let out = entrepot()
        .args(["validate", "platforms/"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn validate_reports_located_problems_and_fails() {
    let out = entrepot()
        .args(["validate", "tests/cases/five_mistakes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tests/cases/five_mistakes/platform.yaml:13:17: error[E_UNKNOWN_HELPER]: operations.order.create.request.form.skuIds: unknown template helper 'jion'"),
        "{err}"
    );
}

#[test]
fn validate_json_format_is_machine_readable() {
    let out = entrepot()
        .args(["validate", "--format", "json", "tests/cases/five_mistakes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let list: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    let first = &list.as_array().unwrap()[0];
    for key in [
        "severity", "code", "file", "line", "column", "path", "message",
    ] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
}

#[test]
fn schema_prints_the_committed_platform_schema() {
    let out = entrepot().args(["schema"]).output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read(root().join("schemas/platform.schema.json")).unwrap();
    assert_eq!(out.stdout, committed);
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["validate", "--help"],
        vec!["schema", "--help"],
    ] {
        let out = entrepot().args(&cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).len() > 200,
            "{cmd:?} help is too thin"
        );
    }
}
