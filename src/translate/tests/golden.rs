//! Golden translation tests: every `testdata/<case>/` directory holds a configuration (YAML
//! plus the key and CA files it names) and `translated.json`, exactly what
//! `tessera translate --config <case>` prints. Any difference fails with the first differing
//! lines; `TESSERA_UPDATE_GOLDEN=1 cargo test --lib golden` rewrites the outputs and deletes
//! those whose case has no YAML left. Secret values in testdata contain `SECRET`, which must
//! never reach an output.

use crate::credentials::static_key;
use crate::translate::names;
use crate::translate::render;
use std::path::{Path, PathBuf};

const OUTPUT: &str = "translated.json";
const UPDATE: &str = "TESSERA_UPDATE_GOLDEN";
/// Every secret value in testdata contains this.
const SECRET_MARKER: &str = "SECRET";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/testdata")
}

/// What `tessera translate --config dir` prints.
fn render_case(dir: &Path) -> Result<String, String> {
    let loaded = crate::source::load(dir).map_err(|e| e.to_string())?;
    let materials = static_key::read_all(&loaded.model)
        .into_iter()
        .filter_map(|(policy, read)| Some((names::credential(&policy), read.ok()?)))
        .collect();
    let gateways = render::offline(&loaded.model, &materials).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&gateways).map_err(|e| e.to_string())?;
    Ok(json + "\n")
}

fn has_yaml(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let name = e.unwrap().file_name();
        let name = name.to_string_lossy();
        name.ends_with(".yaml") || name.ends_with(".yml")
    })
}

/// The first differing lines, expected (`-`) then actual (`+`), after a little context.
fn first_difference(expected: &str, actual: &str) -> String {
    const SHOWN: usize = 6;
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let shorter = e.len().min(a.len());
    let first = (0..shorter).find(|&i| e[i] != a[i]).unwrap_or(shorter);
    // Where the texts agree again: for edits in place, the next equal line; for insertions
    // and deletions, the common tail. A one-line change shows as one line each.
    let (e_end, a_end) = if e.len() == a.len() {
        let end = (first..e.len()).find(|&i| e[i] == a[i]).unwrap_or(e.len());
        (end, end)
    } else {
        let suffix = (0..shorter - first)
            .take_while(|&i| e[e.len() - 1 - i] == a[a.len() - 1 - i])
            .count();
        (e.len() - suffix, a.len() - suffix)
    };
    let mut out = format!("first difference at line {}:\n", first + 1);
    for (i, line) in e
        .iter()
        .enumerate()
        .take(first)
        .skip(first.saturating_sub(3))
    {
        out += &format!("  {:>5} {line}\n", i + 1);
    }
    for (sign, lines) in [('-', &e[first..e_end]), ('+', &a[first..a_end])] {
        for line in lines.iter().take(SHOWN) {
            out += &format!("{sign} {:>5} {line}\n", "");
        }
        if lines.len() > SHOWN {
            out += &format!("{sign} {:>5} … {} more\n", "", lines.len() - SHOWN);
        }
    }
    out
}

#[test]
fn golden() {
    let update = std::env::var_os(UPDATE).is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    let mut rendered_cases = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let output = case.join(OUTPUT);
        if !has_yaml(case) {
            if update && output.exists() {
                std::fs::remove_file(&output).unwrap();
                // Gone too if nothing else was left in it.
                let _ = std::fs::remove_dir(case);
                println!("{name}: removed {OUTPUT}, its input is gone");
            } else if output.exists() {
                failures.push(format!("{name}: {OUTPUT} has no input; run {UPDATE}=1"));
            }
            continue;
        }
        rendered_cases += 1;
        let actual = match render_case(case) {
            Ok(actual) => actual,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if actual.contains(SECRET_MARKER) {
            failures.push(format!("{name}: a secret value reached the output"));
            continue;
        }
        let expected = std::fs::read_to_string(&output).ok();
        if expected.as_deref() == Some(actual.as_str()) {
            continue;
        }
        if update {
            std::fs::write(&output, &actual).unwrap();
            println!("{name}: wrote {OUTPUT}");
        } else if let Some(expected) = expected {
            let diff = first_difference(&expected, &actual);
            failures.push(format!(
                "{name}/{OUTPUT} differs (run {UPDATE}=1 cargo test --lib golden to accept)\n{diff}"
            ));
        } else {
            failures.push(format!("{name}/{OUTPUT} is missing; run {UPDATE}=1"));
        }
    }
    assert!(
        rendered_cases >= 6,
        "only {rendered_cases} golden cases found"
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn first_difference_shows_context_and_both_sides() {
    let diff = first_difference("a\nb\nc\nd\n", "a\nb\nX\nd\n");
    assert_eq!(
        diff,
        "first difference at line 3:\n      1 a\n      2 b\n-       c\n+       X\n"
    );
    let diff = first_difference("a\nb\nc\nd\n", "a\nX\nc\nY\n");
    assert_eq!(
        diff,
        "first difference at line 2:\n      1 a\n-       b\n+       X\n"
    );
    let diff = first_difference("a\n", "a\nb\n");
    assert_eq!(diff, "first difference at line 2:\n      1 a\n+       b\n");
    let long = "x\n".repeat(10);
    let diff = first_difference("", &long);
    assert!(diff.ends_with("+       x\n+       … 4 more\n"), "{diff}");
}
