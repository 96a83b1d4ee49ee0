//! The `stacklab-bench` binary as a person runs it.

/// Issue 19: `compare` wrote to the results folder of the checkout it was compiled in. Run
/// from a folder outside any stacklab checkout and without `--out`, it now says so and stops
/// before starting anything (inside a checkout it writes to that checkout's `bench/results/`,
/// `report::tests`).
#[test]
fn compare_outside_a_checkout_without_out_says_where_to_write() {
    let dir = crate::temp_dir("no-workspace");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stacklab-bench"))
        .args(["compare", "--quick"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not inside a stacklab checkout") && err.contains("--out DIR"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing was written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
