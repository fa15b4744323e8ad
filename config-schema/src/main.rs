fn main() -> std::process::ExitCode {
    let outputs = [
        (config_schema::SCHEMA_FILE, config_schema::schema_json()),
        (
            config_schema::reference::REFERENCE_FILE,
            config_schema::reference(),
        ),
    ];
    for (file, text) in outputs {
        match text.map(|t| std::fs::write(file, t)) {
            Ok(Ok(())) => println!("wrote {file}"),
            Ok(Err(e)) => {
                eprintln!("write {file}: {e}");
                return std::process::ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("serialize schema: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
