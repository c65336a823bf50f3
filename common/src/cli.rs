//! What every portwatch binary can write of itself: its man pages and its shell completions.
//!
//! Each binary parses its command line with [`parse`], which adds two subcommands to the binary's
//! own clap definition ([`command`]):
//!
//! - `completions SHELL` (visible): prints the completions for one shell to stdout, for people who
//!   build from source (the packages install them already);
//! - `generate --out-dir DIR` (hidden): writes the man pages and the bash, zsh and fish completions;
//!   `packaging/build.sh` runs it on the release binaries and packs the files it writes. It is added
//!   at run time, outside [`command`], so it appears in no help text, man page or completion.
//!
//! Both render the definition the binary really parses, so the pages and the completions always
//! match the flags it takes.

use std::fs;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command, CommandFactory, Parser};
use clap_complete::shells::Shell;

/// Name of the hidden subcommand.
const GENERATE: &str = "generate";

/// Name of the subcommand that prints completions.
const COMPLETIONS: &str = "completions";

/// The command line of `C` as the binary parses it: its own definition and `completions SHELL`.
pub fn command<C: CommandFactory>() -> Command {
    let command = C::command();
    let name = command.get_name().to_owned();
    command.subcommand(
        Command::new(COMPLETIONS)
            .about("Print shell completions to stdout (the packages install them already)")
            .after_help(format!(
                "Shells: bash, elvish, fish, powershell, zsh. Examples:
  source <({name} completions bash)                          this shell only
  {name} completions bash > ~/.local/share/bash-completion/completions/{name}
  {name} completions zsh > ~/.zfunc/_{name}                  (a directory in $fpath)
  {name} completions fish > ~/.config/fish/completions/{name}.fish"
            ))
            .arg(
                Arg::new("shell")
                    .value_name("SHELL")
                    .required(true)
                    .action(ArgAction::Set)
                    .value_parser(clap::value_parser!(Shell)),
            ),
    )
}

/// The completions of `command` for `shell`, as the script text.
pub fn completions(mut command: Command, shell: Shell) -> Vec<u8> {
    let name = command.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut out);
    out
}

/// Parses the command line of `C`, or runs the hidden `generate --out-dir DIR` subcommand.
///
/// `Continue(cli)` is the parsed command line; `Break(code)` means `generate` ran (its files are
/// listed on stdout, an error on stderr) and the binary should exit with `code`. Usage errors exit
/// the process as clap does (status 2).
pub fn parse<C: Parser>() -> ControlFlow<ExitCode, C> {
    let matches = command::<C>()
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
    let name = C::command().get_name().to_owned();
    if let Some((COMPLETIONS, sub)) = matches.subcommand() {
        let Some(&shell) = sub.get_one::<Shell>("shell") else {
            return ControlFlow::Break(ExitCode::from(2));
        };
        let script = completions(command::<C>(), shell);
        let mut out = io::stdout().lock();
        return ControlFlow::Break(match out.write_all(&script).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: error: cannot write the completions: {e}");
                ExitCode::FAILURE
            }
        });
    }
    if let Some((GENERATE, sub)) = matches.subcommand() {
        let Some(dir) = sub.get_one::<PathBuf>("out_dir") else {
            return ControlFlow::Break(ExitCode::from(2));
        };
        return ControlFlow::Break(match write_assets(command::<C>(), dir) {
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
        fs::write(&path, completions(command.clone(), shell))?;
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
