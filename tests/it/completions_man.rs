//! `snigate completions SHELL` and `snigate man` are generated from the clap definition: each
//! names every subcommand, so they cannot drift from the CLI.

use std::process::{Command, Output};

const SUBCOMMANDS: [&str; 8] =
    ["run", "check", "demo", "import-nginx", "import-haproxy", "ticket-key", "completions", "man"];

fn snigate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snigate")).args(args).output().expect("run snigate")
}

#[test]
fn completions_for_every_shell_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = snigate(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}: {}", String::from_utf8_lossy(&output.stderr));
        let script = String::from_utf8(output.stdout).unwrap();
        for subcommand in SUBCOMMANDS {
            assert!(script.contains(subcommand), "{shell} completions lack {subcommand}");
        }
        assert!(script.contains("config"), "{shell} completions lack the --config option");
    }
}

#[test]
fn bash_completions_define_the_completion_function() {
    let script = String::from_utf8(snigate(&["completions", "bash"]).stdout).unwrap();
    assert!(script.contains("complete -F _snigate"), "{script}");
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let output = snigate(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("tcsh"));
}

#[test]
fn man_page_is_roff_naming_every_subcommand() {
    let output = snigate(&["man"]);
    assert_eq!(output.status.code(), Some(0));
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH snigate 1"), "not roff:\n{page}");
    assert!(page.contains(".SH NAME") && page.contains(".SH SUBCOMMANDS"), "{page}");
    assert!(page.contains(".SH \"EXIT STATUS\""), "exit codes are documented: {page}");
    for subcommand in SUBCOMMANDS {
        // roff escapes the hyphen.
        let roff = subcommand.replace('-', "\\-");
        assert!(page.contains(&roff), "man page lacks {roff}");
    }
}

#[test]
fn man_dir_gets_one_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let output = snigate(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    for subcommand in SUBCOMMANDS {
        let page = std::fs::read_to_string(dir.path().join(format!("snigate-{subcommand}.1"))).unwrap();
        assert!(page.contains(".TH snigate-"), "{subcommand}: {page}");
    }
    let import = std::fs::read_to_string(dir.path().join("snigate-import-nginx.1")).unwrap();
    assert!(import.contains("\\-\\-server"), "subcommand pages carry their options: {import}");
    let main = std::fs::read_to_string(dir.path().join("snigate.1")).unwrap();
    assert!(main.contains("EXIT STATUS"));
}
