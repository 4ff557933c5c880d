//! The `vxn-blobs` command: parses arguments, calls the library and reports errors.
//!
//! This is the one place that turns results into output and exit codes: stdout carries what a
//! caller may parse (progress lines, summaries), stderr the log and the error, which is printed
//! once as a single line with every cause in its chain. Exit codes: 0 success, 1 failure,
//! 2 usage error (from clap).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use log::LevelFilter;

use vxn_blobs::check;
use vxn_blobs::compile::{self, CompileReport};
use vxn_blobs::deploy::{self, DeployReport};
use vxn_blobs::spec::{self, Spec};
use vxn_blobs::squashfs::{self, BlockCacheOptions, Compression, InjectOptions, Injection};

/// Assemble Xen DomU boot blobs for meta-virtualization's vxn.
#[derive(Debug, Parser)]
#[command(name = "vxn-blobs", version, about, propagate_version = true)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inject files into a squashfs image, writing a new image.
    Inject {
        /// The squashfs image to read.
        input: PathBuf,
        /// Where to write the new image (atomically).
        #[arg(short, long)]
        output: PathBuf,
        /// A file to add as SRC:DEST[:MODE]; MODE is octal (default 0755). SRC may contain ':',
        /// DEST and MODE may not.
        #[arg(long = "add", value_name = "SRC:DEST[:MODE]", value_parser = parse_add, required = true)]
        add: Vec<Injection>,
        /// Compressor of the output: xz (as the seed's mksquashfs -comp xz) or keep the input's.
        #[arg(long, value_enum, default_value_t = CompressionArg::Xz)]
        compression: CompressionArg,
        /// Worker threads; 0 uses every core.
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// A previous output (OUTPUT itself, typically): blocks its record PREVIOUS.vxn-reuse
        /// knows are copied from it rather than compressed again, and OUTPUT.vxn-reuse is
        /// written for the next run. The output is the same byte for byte, only faster.
        #[arg(long, value_name = "PREVIOUS")]
        reuse: Option<PathBuf>,
        /// A block cache directory, shared between runs and builders: blocks it has are taken
        /// from it rather than compressed, and every block of OUTPUT is kept in it. Created
        /// when missing. The output is the same byte for byte, only faster.
        #[arg(long, value_name = "DIR")]
        block_cache: Option<PathBuf>,
        /// The cache's size limit (bytes, or with K, M, G, T); the least recently used blocks
        /// go beyond it.
        #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "block_cache", default_value = "5G")]
        block_cache_size: u64,
        /// Use the cache's blocks but write, touch and remove nothing there (a mirror).
        #[arg(long, requires = "block_cache")]
        block_cache_read_only: bool,
    },
    /// Build initramfs.cpio.gz, rootfs.img and the kernel into the spec's build_dir.
    Compile {
        /// The JSON spec (docs/spec.md).
        #[arg(long)]
        spec: PathBuf,
        /// Print "NN%" lines on stdout for BitBake's percent progress handler.
        #[arg(long)]
        progress: bool,
    },
    /// Install a completed compile under deploy_dir/vxn/<blob_arch>/.
    Deploy {
        /// The JSON spec (docs/spec.md).
        #[arg(long)]
        spec: PathBuf,
    },
    /// Install a completed compile's blobs and SHA256SUMS under DESTDIR + the spec's
    /// install_dir (default /usr/share/vxn/<blob_arch>), as a recipe's do_install into ${D}.
    Install {
        /// The JSON spec (docs/spec.md).
        #[arg(long)]
        spec: PathBuf,
        /// The staging root the install_dir is joined to (created when missing).
        #[arg(long, value_name = "DESTDIR")]
        destdir: PathBuf,
    },
    /// Check a vxn/<arch> directory for what would stop a DomU from booting it.
    Check {
        /// The directory: deploy_dir/vxn/<arch>, or an installed /usr/share/vxn/<arch>.
        dir: PathBuf,
        /// An init script to check in rootfs.img (repeatable); default /vxn-init.sh, which the
        /// Xen backend passes as vcontainer.init.
        #[arg(long = "init", value_name = "PATH", value_parser = parse_init)]
        inits: Vec<String>,
        /// The architecture (x86_64, aarch64, ...); default: the directory's name.
        #[arg(long, value_parser = parse_arch)]
        arch: Option<String>,
        /// Print the report as JSON on stdout instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Make a small input set, compile and deploy it, and show why the result can be trusted.
    Demo {
        /// Directory for the demo's inputs, build and deploy.
        #[arg(long, default_value = "vxn-demo")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    Xz,
    Keep,
}

/// Parses `SRC:DEST[:MODE]`. MODE is recognized only as a trailing field of octal digits after a
/// DEST, so a SRC holding ':' still parses.
fn parse_add(text: &str) -> Result<Injection, String> {
    let usage = || format!("{text:?} is not SRC:DEST[:MODE] (e.g. vxn-init.sh:/vxn-init.sh:0755)");
    let (rest, mode) = match text.rsplit_once(':') {
        Some((rest, last))
            if rest.contains(':')
                && !last.is_empty()
                && last.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (
                rest,
                spec::parse_mode(last).map_err(|e| format!("MODE {e}"))?,
            )
        }
        _ => (text, 0o755),
    };
    let (source, dest) = rest.rsplit_once(':').ok_or_else(usage)?;
    if source.is_empty() || !dest.starts_with('/') {
        return Err(usage());
    }
    Ok(Injection {
        source: PathBuf::from(source),
        dest: dest.to_string(),
        mode,
    })
}

/// An init is a path inside the image, absolute as vcontainer.init= gives it.
fn parse_init(text: &str) -> Result<String, String> {
    if text.starts_with('/') && !text.contains('\0') {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an absolute path inside the image (e.g. /vxn-init.sh)"
        ))
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    spec::parse_size(text).map_err(|e| format!("SIZE {e}"))
}

fn parse_arch(text: &str) -> Result<String, String> {
    match vxn_blobs::kernel::KernelArch::from_target_arch(text) {
        Some(_) => Ok(text.to_string()),
        None => Err(format!(
            "{text:?} is not an architecture vxn builds for; use one of {}",
            vxn_blobs::kernel::SUPPORTED_TARGET_ARCHES
        )),
    }
}

/// println! that ignores a closed or full stdout: the job is done by then, and a report that
/// cannot be shown must not turn it into a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics when stderr cannot be written (a full disk under a log).
            let _ = writeln!(
                std::io::stderr(),
                "vxn-blobs: error: {}",
                error_chain(e.as_ref())
            );
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line. Causes whose text the message already contains (our
/// errors embed their I/O cause) are not repeated.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

/// Log to stderr as "vxn-blobs: <level>: message"; -q errors only, default info, -v debug,
/// -vv trace; RUST_LOG, when set, wins.
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(filters) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filters);
    }
    builder.format(|buf, record| {
        let level = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        writeln!(buf, "vxn-blobs: {level}{}", record.args())
    });
    builder.init();
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Inject {
            input,
            output,
            add,
            compression,
            jobs,
            reuse,
            block_cache,
            block_cache_size,
            block_cache_read_only,
        } => {
            let options = InjectOptions {
                compression: match compression {
                    CompressionArg::Xz => Compression::Xz,
                    CompressionArg::Keep => Compression::Keep,
                },
                jobs,
                source_date_epoch: spec::source_date_epoch_from_env()?,
                reuse,
                block_cache: block_cache.map(|dir| BlockCacheOptions {
                    dir,
                    max_size: block_cache_size,
                    read_only: block_cache_read_only,
                }),
            };
            let report = squashfs::inject(&input, &output, &add, &options, &mut |_, _| {})?;
            say!(
                "wrote {}: {} bytes, {} inodes, {} -> {}{}",
                output.display(),
                report.bytes_written,
                report.inode_count,
                report.input_compressor,
                report.output_compressor,
                if report.data_kept_raw {
                    " (data blocks copied unchanged)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Compile { spec, progress } => {
            let spec = Spec::load(&spec)?;
            let report = run_compile(&spec, progress)?;
            print_compile(&spec, &report);
            Ok(())
        }
        Command::Deploy { spec } => {
            let spec = Spec::load(&spec)?;
            let report = deploy::deploy(&spec)?;
            print_deploy("deploy", &report);
            Ok(())
        }
        Command::Install { spec, destdir } => {
            let spec = Spec::load(&spec)?;
            let report = deploy::install(&spec, &destdir)?;
            print_deploy("install", &report);
            Ok(())
        }
        Command::Check {
            dir,
            inits,
            arch,
            json,
        } => {
            let report = check::check_dir(&dir, &check::Options { arch, inits })?;
            print_check(&report, json);
            report.into_result()?;
            Ok(())
        }
        Command::Demo { out } => demo(&out),
    }
}

/// Runs compile, printing each new percentage on its own line when asked.
fn run_compile(spec: &Spec, progress: bool) -> Result<CompileReport, vxn_blobs::Error> {
    let mut stdout = std::io::stdout();
    compile::run(spec, &mut |pct| {
        if progress {
            // A failed write to stdout must not fail the build; BitBake only reads it.
            let _ = writeln!(stdout, "{pct}%");
            let _ = stdout.flush();
        }
    })
}

fn print_compile(spec: &Spec, report: &CompileReport) {
    let verb = if report.reused { "reused" } else { "built" };
    say!(
        "compile: {verb} {} ({})",
        spec.build_dir.display(),
        report.reason
    );
    for (name, record) in &report.outputs {
        say!("  {}  {name} ({} bytes)", record.sha256, record.size);
    }
}

fn print_deploy(command: &str, report: &DeployReport) {
    say!("{command}: installed into {}", report.dir.display());
    for file in &report.files {
        say!("  {}  {} ({} bytes)", file.sha256, file.name, file.size);
    }
    for name in &report.removed {
        say!("  removed {name} (left by an earlier {command})");
    }
    match &report.check {
        Some(check) if check.ok => say!("  check: nothing found that would stop the boot"),
        Some(check) => say!(
            "  check: {} problem(s) that would stop or change the boot (warnings above)",
            check.findings.len()
        ),
        None => {}
    }
}

/// One line per finding, then a summary; or the whole report as JSON.
fn print_check(report: &check::Report, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => say!("{text}"),
            Err(e) => log::error!("cannot render the report as JSON: {e}"),
        }
        return;
    }
    for finding in &report.findings {
        say!("{}", finding.message);
    }
    if report.ok {
        say!(
            "check: {}: nothing found that would stop the boot ({})",
            report.dir.display(),
            report.checked.join("; ")
        );
    } else {
        say!(
            "check: {}: {} problem(s) that would stop or change the boot",
            report.dir.display(),
            report.findings.len()
        );
    }
}

fn demo(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let report = vxn_blobs::demo::run(out)?;
    let _ = write!(std::io::stdout(), "{}", report.render());
    Ok(())
}
