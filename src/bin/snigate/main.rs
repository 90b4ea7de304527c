//! The `snigate` command: parses the CLI and calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use snigate::config;
use snigate::server::Server;

use crate::log_output::LossyStderr;

mod demo;
mod haproxy;
mod import;
mod log_output;
mod nginx;

/// Exit codes (documented in the README): clap itself exits 2 on a usage error.
/// `check`/`run`: the config is invalid; `import-nginx`/`import-haproxy`: cannot read or cannot translate.
const EXIT_CONFIG_INVALID: u8 = 1;
const EXIT_RUNTIME_FAILURE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "snigate",
    version,
    about = "SNI-routing TLS stream proxy with PROXY v1/v2 and client-certificate identity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground: SIGHUP or a changed file reloads, SIGTERM/SIGINT drain and exit.
    Run {
        /// Routes file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a routes file: every problem is listed as file:line:column; exit 0 or 1.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Report expired certificates, certificates that do not cover their route's names and
        /// broken files of a `cert_dir` as warnings and exit 0, as `run` and reload treat them
        /// (for start and reload hooks).
        #[arg(long)]
        warn_certificates: bool,
    },
    /// Quickstart: make throwaway demo certificates, start echo backends that answer with the
    /// PROXY header they received, run the proxy on the example routes, and show one client each.
    Demo {
        #[arg(long, short, default_value = "routes.example.yaml")]
        config: PathBuf,
    },
    /// Translate an nginx `stream {}` config into a routes file on stdout.
    ///
    /// What differs from nginx is listed on stderr as file:line warnings, and the exit code is 0.
    /// When the file cannot be read or parsed, or parts of it have no equivalent, every problem is
    /// listed, nothing is written to stdout, and the exit code is 1.
    ImportNginx {
        /// The nginx config, e.g. /etc/nginx/nginx.conf; includes are followed.
        file: PathBuf,
        /// Which `server {}` of `stream {}` to translate (1-based), when there are several.
        #[arg(long)]
        server: Option<usize>,
    },
    /// Translate a TCP-mode HAProxy config into a routes file on stdout.
    ///
    /// What differs from HAProxy is listed on stderr as file:line warnings, and the exit code is 0.
    /// When the file cannot be read or parsed, or parts of it have no equivalent (stick tables,
    /// Lua, HTTP rules, maps, …), every problem is listed, nothing is written to stdout, and the
    /// exit code is 1.
    ImportHaproxy {
        /// The HAProxy config, e.g. /etc/haproxy/haproxy.cfg.
        file: PathBuf,
        /// Which `frontend` or `listen` section to translate (by name), when there are several.
        #[arg(long)]
        frontend: Option<String>,
    },
    /// Print a new session ticket key for `session_tickets.key_file`: base64 of 32 random bytes.
    ///
    /// Rotation: prepend its output to the key file on every replica, reload, and remove the
    /// oldest line once `session_tickets.lifetime` has passed.
    TicketKey,
    /// Print a shell completion script to stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per subcommand into a directory.
    Man {
        /// Write snigate.1 and snigate-<subcommand>.1 into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config, warn_certificates } => check(&config, warn_certificates),
        Command::Run { config } => run(&config),
        Command::Demo { config } => demo(&config),
        Command::ImportNginx { file, server } => import_nginx(&file, server),
        Command::ImportHaproxy { file, frontend } => import_haproxy(&file, frontend),
        Command::TicketKey => ticket_key(),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "snigate", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => man(dir.as_deref()),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: not in `docker logs`, journald or a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log line that cannot be written is dropped, never reported (that report would panic).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        .log_internal_errors(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

fn check(path: &Path, warn_certificates: bool) -> ExitCode {
    match config::load(path) {
        // `run` serves these with a warning; `check` is where they must be seen.
        Ok(config) if !config.certificate_problems.is_empty() && !warn_certificates => {
            print_cert_dirs(&config);
            eprintln!("{}", config::ConfigErrors(config.certificate_problems.clone()));
            eprintln!("{}: {} problem(s)", path.display(), config.certificate_problems.len());
            ExitCode::from(EXIT_CONFIG_INVALID)
        }
        Ok(config) => {
            for problem in &config.certificate_problems {
                eprintln!("warning: {problem}");
            }
            print_cert_dirs(&config);
            print_acme_certificates(&config);
            println!("{}: ok ({} routes)", path.display(), config.routes.routes().len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            report(&errors);
            report(&format_args!("{}: {} problem(s)", path.display(), errors.0.len()));
            ExitCode::from(EXIT_CONFIG_INVALID)
        }
    }
}

/// One line per file of each route's `cert_dir`: the names it serves, and which is the default.
fn print_cert_dirs(config: &config::Config) {
    for route in config.routes.routes() {
        let Some(tls) = &route.tls else { continue };
        for certificate in &tls.certificates.dir_certificates {
            let default = if tls.is_default(certificate) { " (default)" } else { "" };
            let names =
                if certificate.names().is_empty() { "no DNS names".into() } else { certificate.names().join(", ") };
            println!("route {:?}: {}{default}: {names}", route.name, certificate.file.display());
        }
    }
}

/// One line per `acme:` certificate: whether it is stored yet, and which routes serve it.
fn print_acme_certificates(config: &config::Config) {
    for certificate in &config.acme_certificates {
        let state = if certificate.cert_file().exists() {
            format!("stored in {}", certificate.folder().display())
        } else {
            format!("not issued yet: `run` orders it from {}", certificate.directory)
        };
        println!(
            "acme {} ({}) for routes {:?}: {state}",
            certificate.id,
            certificate.names.join(", "),
            certificate.routes
        );
    }
}

/// A line on stderr for `check` and `run`; with stderr closed (EPIPE) it is dropped, not a panic.
fn report(text: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

fn run(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => {
            config.warn_certificate_problems();
            config
        }
        Err(errors) => {
            report(&errors);
            return ExitCode::from(EXIT_CONFIG_INVALID);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
    };
    match snigate::fd_limit::raise() {
        Ok(nofile) => tracing::info!(soft = nofile.soft, hard = nofile.hard, "open-file limit"),
        Err(error) => tracing::warn!(%error, "keeping the open-file limit"),
    }
    let code = runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::from(EXIT_RUNTIME_FAILURE);
            }
        };
        let (shutdown, end_drain) = (CancellationToken::new(), CancellationToken::new());
        if let Err(error) = snigate::signals::spawn(server.reload_handle(), shutdown.clone(), end_drain.clone()) {
            tracing::error!(%error, "cannot install signal handlers");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
        let files = server.watched_files().to_vec();
        if let Err(error) = snigate::reload::watch(files, server.reload_handle(), shutdown.clone()) {
            tracing::warn!(%error, "cannot watch the config files; reload with SIGHUP");
        }
        match server.run_until(shutdown, end_drain).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "stopped with an error");
                ExitCode::from(EXIT_RUNTIME_FAILURE)
            }
        }
    });
    // Drained: a reload abandoned by the shutdown (still reading its files) must not hold the exit.
    runtime.shutdown_background();
    code
}

fn demo(path: &Path) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
    };
    match runtime.block_on(crate::demo::run(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}

fn import_nginx(path: &Path, server: Option<usize>) -> ExitCode {
    match nginx::import(path, &nginx::Options { server }) {
        Ok(imported) => imported_file(path, &imported.yaml, &imported.warnings),
        Err(nginx::ImportError::Untranslatable(diagnostics)) => untranslatable(path, &diagnostics),
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG_INVALID)
        }
    }
}

fn import_haproxy(path: &Path, frontend: Option<String>) -> ExitCode {
    match haproxy::import(path, &haproxy::Options { frontend }) {
        Ok(imported) => imported_file(path, &imported.yaml, &imported.warnings),
        Err(haproxy::ImportError::Untranslatable(diagnostics)) => untranslatable(path, &diagnostics),
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG_INVALID)
        }
    }
}

/// An importer's routes file on stdout, its warnings on stderr.
fn imported_file(path: &Path, yaml: &str, warnings: &[import::diagnostic::Diagnostic]) -> ExitCode {
    for warning in warnings {
        eprintln!("{warning}");
    }
    print!("{yaml}");
    if !warnings.is_empty() {
        eprintln!("{}: translated with {} warning(s)", path.display(), warnings.len());
    }
    ExitCode::SUCCESS
}

/// Every finding of an import that failed; nothing on stdout.
fn untranslatable(path: &Path, diagnostics: &[import::diagnostic::Diagnostic]) -> ExitCode {
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
    let errors = diagnostics.iter().filter(|d| d.severity == import::diagnostic::Severity::Error).count();
    eprintln!("{}: cannot translate ({errors} error(s)); nothing written", path.display());
    ExitCode::from(EXIT_CONFIG_INVALID)
}

/// The README's exit code table, as a man page section.
const MAN_EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
ok; a clean shutdown after SIGTERM/SIGINT; \fBimport\-nginx\fR or \fBimport\-haproxy\fR translated (warnings, if any, on stderr)
.TP
\fB1\fR
the config is invalid (\fBcheck\fR, or \fBrun\fR at start\-up); \fBimport\-nginx\fR or \fBimport\-haproxy\fR cannot read or cannot translate the nginx or HAProxy config
.TP
\fB2\fR
usage error: unknown subcommand or flag, missing argument
.TP
\fB3\fR
runtime failure, e.g. a listen address cannot be bound
"#;

fn ticket_key() -> ExitCode {
    match snigate::session_tickets::new_key_line() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("error: the system random number generator failed");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}

fn man(dir: Option<&Path>) -> ExitCode {
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(Cli::command()).render(&mut page).and_then(|()| {
        page.extend_from_slice(MAN_EXIT_STATUS.as_bytes());
        match dir {
            None => std::io::Write::write_all(&mut std::io::stdout(), &page),
            Some(dir) => {
                clap_mangen::generate_to(Cli::command(), dir)?;
                std::fs::write(dir.join("snigate.1"), &page)
            }
        }
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write the man page: {error}");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}
