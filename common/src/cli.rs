//! What every portwatch binary can write of itself: its man pages and its shell completions.
//!
//! Each binary parses its command line with [`parse`], which adds one hidden subcommand,
//! `generate --out-dir DIR`. It renders the binary's own clap definition, so the pages and the
//! completions always match the flags the binary really takes; `packaging/build.sh` runs it on the
//! release binaries and packs the files it writes. The subcommand is added at run time, outside the
//! binary's definition, so it appears in no help text, man page or completion.

use std::fs;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command, Parser};
use clap_complete::shells::Shell;

/// Name of the hidden subcommand.
const GENERATE: &str = "generate";

/// Parses the command line of `C`, or runs the hidden `generate --out-dir DIR` subcommand.
///
/// `Continue(cli)` is the parsed command line; `Break(code)` means `generate` ran (its files are
/// listed on stdout, an error on stderr) and the binary should exit with `code`. Usage errors exit
/// the process as clap does (status 2).
pub fn parse<C: Parser>() -> ControlFlow<ExitCode, C> {
    let matches = C::command()
        .subcommand(
            Command::new(GENERATE)
                .hide(true)
                .about("Write this program's man pages and shell completions (for packagers)")
                .arg(
                    Arg::new("out_dir")
                        .long("out-dir")
                        .value_name("DIR")
                        .required(true)
                        .action(ArgAction::Set)
                        .value_parser(clap::value_parser!(PathBuf)),
                ),
        )
        .get_matches();
    if let Some((GENERATE, sub)) = matches.subcommand() {
        let Some(dir) = sub.get_one::<PathBuf>("out_dir") else {
            return ControlFlow::Break(ExitCode::from(2));
        };
        let name = C::command().get_name().to_owned();
        return ControlFlow::Break(match write_assets(C::command(), dir) {
            Ok(files) => {
                let mut out = io::stdout().lock();
                for file in files {
                    let _ = writeln!(out, "{}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "{name}: error: cannot write the man pages and completions into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        });
    }
    ControlFlow::Continue(C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// Writes the man pages and shell completions of `command` under `dir`, and returns their paths:
///
/// - `man/NAME.1`, and `man/NAME-SUB.1` for every (visible) subcommand, at any depth;
/// - `completions/bash/NAME`, `completions/zsh/_NAME`, `completions/fish/NAME.fish`: the file names
///   each shell's completion loader looks for.
pub fn write_assets(mut command: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let name = command.get_name().to_owned();
    let mut files = Vec::new();

    let man = dir.join("man");
    fs::create_dir_all(&man)?;
    command.build();
    write_man_pages(command.clone(), &man, &mut files)?;

    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let sub = dir.join("completions").join(sub);
        fs::create_dir_all(&sub)?;
        let path = sub.join(file);
        let mut out = io::BufWriter::new(fs::File::create(&path)?);
        clap_complete::generate(shell, &mut command, &name, &mut out);
        out.flush()?;
        files.push(path);
    }
    Ok(files)
}

/// One page for `command`, then one for each visible subcommand (named `parent-sub`).
fn write_man_pages(command: Command, dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_man_pages(sub.clone(), dir, files)?;
    }
    let man = clap_mangen::Man::new(command);
    files.push(man.generate_to(dir)?);
    Ok(())
}
