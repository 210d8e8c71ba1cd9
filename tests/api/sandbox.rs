//! The extraction worker's confinement, tried from inside a confined process of the real
//! binary: no file outside its scratch folder, no socket, no new program; threads still work.

use serde_json::Value;

#[test]
fn the_worker_confines_itself_with_landlock_and_seccomp() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let outside = dir.path().join("segreto.txt");
    std::fs::write(&outside, "dati riservati").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .arg("sandbox-probe")
        .arg("--scratch")
        .arg(&scratch)
        .arg("--outside")
        .arg(&outside)
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let probe: Value = serde_json::from_slice(&output.stdout).unwrap();
    let layers = &probe["layers"]["Ok"];
    assert!(
        layers["landlock"] == "full" || layers["landlock"] == "partial",
        "{probe}"
    );
    assert_eq!(layers["seccomp"], true, "{probe}");
    assert_eq!(probe["read_outside"], false, "{probe}");
    assert_eq!(probe["write_outside"], false, "{probe}");
    assert!(!dir.path().join("written-by-the-worker.txt").exists());
    assert_eq!(probe["write_scratch"], true, "{probe}");
    assert_eq!(probe["socket"], false, "{probe}");
    assert_eq!(probe["spawn"], false, "{probe}");
    assert_eq!(probe["thread"], true, "{probe}");
    // The network namespace is optional (root or user namespaces); say which it was.
    eprintln!("network namespace: {}", layers["network_namespace"]);
}

/// The OCR worker may start programs (Tesseract, pdftoppm), and they inherit its confinement:
/// neither it nor a program it starts reads a file outside, writes one, or opens a socket.
#[test]
fn the_ocr_worker_may_start_programs_that_stay_confined() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("segreto.txt");
    std::fs::write(&outside, "dati riservati").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fascicolo"))
        .arg("sandbox-probe")
        .arg("--programs")
        .arg("--outside")
        .arg(&outside)
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let probe: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(probe["layers"]["Ok"]["seccomp"], true, "{probe}");
    assert_eq!(probe["spawn"], true, "{probe}");
    assert_eq!(probe["child_escaped"], false, "{probe}");
    assert!(!dir.path().join("written-by-a-child.txt").exists());
    assert_eq!(probe["read_outside"], false, "{probe}");
    assert_eq!(probe["write_outside"], false, "{probe}");
    assert_eq!(probe["socket"], false, "{probe}");
}
