//! The subcommands that show the set and shape it: `ui` (the page, served), `report --html`
//! (the same page in one file), `graph` (dot or JSON) and `suggest`. Each builds its answer
//! from [`depsetfs::analysis::ui`] over the same graph, rules and selection as every other
//! analysis command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgMatches, Args};

use depsetfs::analysis::strategy::Strategy;
use depsetfs::analysis::ui::{self, UiError, graph_out, model::Session, suggest};
use depsetfs::state::StateDir;

use super::CliError;
use super::analyse::SelectArgs;
use super::load::{command_line_selectors, load_graph, log_path};
use super::output::{write_json, write_stdout};
use super::ship::SetArgs;

#[derive(Args)]
pub(crate) struct UiArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// The rules file to start from and to save to (it may not exist yet).
    #[arg(long)]
    pub(crate) rules: Option<PathBuf>,
    /// The address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: String,
    /// The strategy the page starts with.
    #[arg(long, value_enum, default_value = "strict")]
    pub(crate) strategy: Strategy,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
}

#[derive(Args)]
pub(crate) struct GraphArgs {
    /// `dot` (Graphviz) or `json`.
    #[arg(long, value_enum)]
    pub(crate) format: GraphFormat,
    /// Also draw the set's used files (dot).
    #[arg(long)]
    pub(crate) files: bool,
    #[command(flatten)]
    pub(crate) set: SetArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Json,
}

#[derive(Args)]
pub(crate) struct SuggestArgs {
    #[command(flatten)]
    pub(crate) set: SetArgs,
    /// One JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The page's session: the graph, the rules file (the built-in rules when it does not exist
/// yet) with the command line's selectors first, the strategy.
pub(crate) fn session(
    log: Option<&Path>,
    rules_path: Option<&Path>,
    strategy: Strategy,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<Session, CliError> {
    let (path, _) = log_path(log, state)?;
    let graph = load_graph(Some(&path), state)?;
    let mut rules = match rules_path {
        Some(rules) if rules.exists() => depsetfs::analysis::rules::Rules::load(rules)?,
        _ => depsetfs::analysis::rules::Rules::built_in(),
    };
    if let Some(matches) = matches {
        let mut selectors = command_line_selectors(matches)?;
        selectors.append(&mut rules.select);
        rules.select = selectors;
    }
    let session = Session::new(
        graph,
        path,
        rules,
        rules_path.map(Path::to_path_buf),
        strategy,
    )
    .map_err(UiError::from)?;
    Ok(session)
}

pub(crate) fn ui_command(
    args: UiArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let session = session(
        args.log.as_deref(),
        args.rules.as_deref(),
        args.strategy,
        matches,
        state,
    )?;
    let server = ui::Server::bind(session, &args.listen)?;
    // The URL holds the token: stdout, for the user (and scripts) only.
    write_stdout(|out| {
        writeln!(out, "{}", server.url())?;
        out.flush()
    })?;
    eprintln!("depsetfs: serving the page; stop with Ctrl-C");
    server.serve();
    Ok(ExitCode::SUCCESS)
}

/// `report --html FILE`: the page with its data, in one file.
pub(crate) fn html_report(
    log: Option<&Path>,
    rules: Option<&Path>,
    html: &Path,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let session = session(log, rules, Strategy::Strict, matches, state)?;
    ui::write_static_page(&session, html)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn graph_command(
    args: GraphArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let plan = args.set.plan(matches, state)?;
    let result = plan.set(&args.set.strategy_options(false));
    write_stdout(|out| match args.format {
        GraphFormat::Dot => out.write_all(
            graph_out::dot_with_files(&plan.graph, &plan.selection, &result, args.files).as_bytes(),
        ),
        GraphFormat::Json => {
            write_json(&graph_out::json(&plan.graph, &plan.selection, &result), out)
        }
    })
}

pub(crate) fn suggest_command(
    args: SuggestArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let plan = args.set.plan(matches, state)?;
    let result = plan.set(&args.set.strategy_options(false));
    let suggestions = suggest::suggest(
        &plan.graph,
        &result,
        &plan.rules,
        &plan.set_options(),
        &plan.selection,
    );
    write_stdout(|out| {
        if args.json {
            write_json(&suggestions, out)
        } else {
            for s in &suggestions {
                writeln!(out, "{}\t{}\t{}", s.kind.name(), s.path, s.evidence)?;
            }
            Ok(())
        }
    })
}
