//! `kubectl gebeta completion SHELL`: a completion script for the `kubectl-gebeta` command.

use clap::CommandFactory as _;
use clap_complete::Shell;

/// `completion` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell to write a script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Writes the script to stdout.
pub fn run(args: &CompletionArgs) {
    print!("{}", script(args.shell));
}

/// The script for `shell`, completing the `kubectl-gebeta` binary.
pub fn script(shell: Shell) -> String {
    let mut command = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "kubectl-gebeta", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_binary_and_its_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            assert!(text.contains("kubectl-gebeta"), "{shell}");
            for command in ["status", "refresh", "rotate", "audit", "timeline"] {
                assert!(text.contains(command), "{shell} lacks {command}");
            }
        }
    }
}
