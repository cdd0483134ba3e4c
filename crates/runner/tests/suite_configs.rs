//! The suites shipped in `configs/suites/` load and check as they are (keys, names, protocol), with
//! the data a user passes (`--data NAME=PATH`) for the datasets that name none.

use std::path::Path;

use surprisal_runner::suite::Suite;

#[test]
fn shipped_suites_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/suites");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        // first without overrides: a dataset without data must be named in the error
        let overrides: Vec<(String, String)> = match Suite::load(&p, &[]) {
            Ok(_) => vec![],
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("has no data: pass --data"),
                    "{}: {e}",
                    p.display()
                );
                let text = std::fs::read_to_string(&p).unwrap();
                let file: toml::Value = toml::from_str(&text).unwrap();
                file["datasets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d.get("data").is_none())
                    .map(|d| (d["name"].as_str().unwrap().to_string(), "x.txt".to_string()))
                    .collect()
            }
        };
        let s = Suite::load(&p, &overrides).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let settings = s.settings().unwrap();
        assert!(settings.protocol.window >= 2);
        assert!(!s.file.models.is_empty() && !s.file.datasets.is_empty());
        assert!(s.file.results.is_some(), "{}: no results root", p.display());
        n += 1;
    }
    assert!(n >= 2, "no suites in {}", dir.display());
}
