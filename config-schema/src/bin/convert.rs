//! mesh-authn-convert [--root-namespace NS] [--url URL] [--sha256 HEX] [FILE ...]
//! Reads Istio RequestAuthentication / PeerAuthentication / legacy Policy YAML (files or stdin)
//! and prints the equivalent mesh-authn WasmPlugins.

use std::io::Read;
use std::process::ExitCode;

use config_schema::convert::{convert, to_yaml, Options};

fn main() -> ExitCode {
    match run() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh-authn-convert: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, String> {
    let mut opts = Options::default();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--root-namespace" => opts.root_namespace = value(&a)?,
            "--url" => opts.url = value(&a)?,
            "--sha256" => opts.sha256 = Some(value(&a)?),
            "-h" | "--help" => {
                return Ok(
                    "usage: mesh-authn-convert [--root-namespace NS] [--url URL] \
                           [--sha256 HEX] [FILE ...]\n"
                        .into(),
                )
            }
            f if f.starts_with("--") => return Err(format!("unknown option {f}")),
            f => files.push(f.to_string()),
        }
    }
    let mut input = String::new();
    if files.is_empty() {
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| format!("stdin: {e}"))?;
    }
    for f in &files {
        input.push_str(&std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?);
        input.push_str("\n---\n");
    }
    to_yaml(&convert(&input, &opts)?)
}
