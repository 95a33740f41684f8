//! The benchmark keeps working: a seconds-long run of every phase produces
//! every figure, for both servers where both apply.

use std::process::Command;

#[test]
fn every_benchmark_phase_runs_and_reports() -> anyhow::Result<()> {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_hub-bench"));
    let output = tests::output_within(bench.args(["--smoke", "--json"]), tests::RUN_LIMIT)?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(output.status.success(), "hub-bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    let figures = report["figures"].as_array().expect("figures");
    let names: Vec<&str> = figures.iter().filter_map(|f| f["name"].as_str()).collect();
    for wanted in [
        "durable routed messages/s",
        "routing capacity",
        "delivery latency p99",
        "handshakes",
        "memory per idle",
        "until first delivery",
        "hub path",
    ] {
        assert!(names.iter().any(|n| n.contains(wanted)), "no figure for {wanted}: {names:?}");
    }
    // The stages come from the hub process itself: a flush and a delivery were timed during the latency phase.
    for stage in ["flush p99", "deliver p99"] {
        let timed =
            figures.iter().find(|f| f["name"].as_str().is_some_and(|n| n.contains("hub path") && n.contains(stage)));
        assert!(timed.and_then(|f| f["hub"].as_f64()).is_some_and(|us| us > 0.0), "no {stage}: {timed:?}");
    }
    for figure in figures {
        let hub = figure["hub"].as_f64().expect("a hub value");
        assert!(hub.is_finite() && hub >= 0.0, "bad hub value: {figure}");
        if figure["unit"].as_str().is_some_and(|u| u.ends_with("/s")) {
            assert!(hub > 0.0, "a rate of zero: {figure}");
        }
        if figure["relay"].is_number() {
            assert!(figure["ratio"].as_f64().is_some_and(|r| r > 0.0), "no ratio: {figure}");
        }
    }
    Ok(())
}
