//! The crate's architecture, checked on its source: each top-level module uses only modules of
//! lower layers (so there is no import cycle between them), and only `abi` holds `unsafe` code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Lower layers first; a module may use only modules of a strictly lower layer.
const LAYERS: &[&[&str]] = &[
    &["error", "json", "pattern"],
    &["crypto"],
    &["jwt", "request", "peer"],
    &["remote"],
    &["config"],
    &["replay"],
    &["authn"],
    &["runtime"],
    &["abi"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each `.rs` file with the top-level module it belongs to.
fn modules() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.components().next()?.as_os_str().to_str()?.to_string();
            let module = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            Some((module, path, text))
        })
        .collect()
}

#[test]
fn modules_use_only_lower_layers() {
    let mut violations = Vec::new();
    for (module, path, text) in modules() {
        if module == "lib" {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| panic!("{module} is in no layer"));
        for (at, _) in text.match_indices("crate::") {
            let used: String = text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let Some(theirs) = layer(&used) else {
                continue;
            };
            if used != module && theirs >= own {
                violations.push(format!("{} uses crate::{used}", path.display()));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn unsafe_code_only_in_abi() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(lib.contains("#![deny(unsafe_code)]"));
    for (module, path, text) in modules() {
        if module != "abi" {
            assert!(
                !text.contains("unsafe ") && !text.contains("allow(unsafe_code)"),
                "{} has unsafe code",
                path.display()
            );
        }
    }
}

/// The layout in docs/design.md names every module of the tree, so a newcomer finds each file
/// there: `x.rs` or `x/` for top-level modules, `` `name` `` for the files inside them. Test
/// modules (`tests.rs`, `tests/`) are not listed one by one.
#[test]
fn design_layout_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let design = std::fs::read_to_string(root.join("../docs/design.md")).unwrap();
    let layout = design
        .split("\n## Layout")
        .nth(1)
        .expect("docs/design.md has a Layout section")
        .split("\n## ")
        .next()
        .unwrap();
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut missing = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        if parts.iter().any(|p| *p == "tests" || *p == "tests.rs") || parts == ["lib.rs"] {
            continue;
        }
        let stem = rel.file_stem().unwrap().to_str().unwrap();
        let wanted = match parts.as_slice() {
            [file] => format!("`{file}`"),
            [dir, "mod.rs"] => format!("`{dir}/`"),
            [.., "mod.rs"] => format!("`{}`", parts[parts.len() - 2]),
            _ => format!("`{stem}`"),
        };
        if !layout.contains(&wanted) {
            missing.push(format!("{} (as {wanted})", rel.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/design.md's Layout does not name: {missing:#?}"
    );
}
