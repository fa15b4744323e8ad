fn main() -> std::process::ExitCode {
    match config_schema::schema_json().map(|s| std::fs::write(config_schema::SCHEMA_FILE, s)) {
        Ok(Ok(())) => {
            println!("wrote {}", config_schema::SCHEMA_FILE);
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("write {}: {e}", config_schema::SCHEMA_FILE);
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("serialize schema: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
