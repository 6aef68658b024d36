//! Query: CloudWatch Logs Insights–style questions over flow records, mirrorflow's own or
//! real AWS VPC Flow Logs (`parse.rs` the language, `eval.rs` execution, `input.rs` the
//! readers, `output.rs` table/CSV/JSON).

pub mod eval;
pub mod input;
pub mod output;
pub mod parse;
pub mod value;

pub use eval::Table;

/// Parses and runs `query` over the events of `inputs`.
pub fn run(query: &str, inputs: &[std::path::PathBuf]) -> Result<Table, String> {
    let commands = parse::parse(query).map_err(|e| format!("query: {e}"))?;
    let rows = input::read_all(inputs)?;
    eval::run(&commands, rows).map_err(|e| format!("query: {e}"))
}
