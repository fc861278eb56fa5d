//! `quorate bench`. SKELETON: contract only.

/// Arguments of `quorate bench` (clap).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Run the benchmark and print its report; the CLI calls this.
pub async fn run_cli(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("skeleton")
}
