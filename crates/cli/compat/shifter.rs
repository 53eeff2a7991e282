//! `shifter`: Shifter's command, as its users' scripts call it (`srun shifter python app.py`
//! in a job submitted with `#SBATCH --image=docker:NAME`). In a job's container the command
//! runs in place: the job's script and tasks run in its image already. Anywhere else (a
//! login node, a job on the host) it is `berth exec` of the image named.
//!
//! `shifterimg`: Shifter's image gateway's client, as the controller's images: `images`
//! (the cluster's store), `pull` (the controller pulls, `berth image pull --cluster`),
//! `lookup` (an image's id).

use anyhow::{bail, Result};
use berth_image::Reference;
use clap::Parser;
use std::os::unix::process::CommandExt;

#[derive(Parser, Debug)]
#[command(
    name = "shifter",
    about = "Run a command in an image, as Shifter's shifter does (in a job's container: in place)"
)]
struct Shifter {
    /// The image: [docker:]NAME[:TAG] or id:HEX [default: $SHIFTER, $SHIFTER_IMAGE,
    /// $SLURM_SPANK_SHIFTER_IMAGE; in a job, the job's]
    #[arg(short, long, value_name = "IMAGE")]
    image: Option<String>,
    /// Bind SRC:DST[:ro] (several separated by ';'; repeatable)
    #[arg(short = 'V', long, value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Set a variable in the command's environment (repeatable)
    #[arg(short, long, value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Start from an empty environment (then --env's)
    #[arg(short = 'E', long)]
    clearenv: bool,
    /// The command's working directory [default: the current one]
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Run the image's ENTRYPOINT (or CMD as the entrypoint) with the arguments
    #[arg(long, value_name = "CMD", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    entrypoint: Option<String>,
    /// Shifter's site modules: berth has none (`none` is fine; others are ignored, with a
    /// warning)
    #[arg(short, long, value_name = "MODULE")]
    module: Vec<String>,
    /// Accepted (berth says what it does only when it fails)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The image Shifter's variables name, as `--image` would: `$SHIFTER` (TYPE:SPEC), else
/// `$SHIFTER_IMAGE` or `$SLURM_SPANK_SHIFTER_IMAGE` with its `..._IMAGETYPE`.
fn image_from_env(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(v) = var("SHIFTER") {
        return Some(v);
    }
    ["SHIFTER_IMAGE", "SLURM_SPANK_SHIFTER_IMAGE"]
        .iter()
        .find_map(|name| {
            let spec = var(name)?;
            Some(match var(&format!("{name}TYPE")) {
                Some(kind) => format!("{kind}:{spec}"),
                None => spec,
            })
        })
}

/// `shifter [OPTIONS] COMMAND [ARGS...]`.
pub fn shifter(words: Vec<String>) -> Result<i32> {
    let args = Shifter::try_parse_from(std::iter::once("shifter".to_string()).chain(words))
        .unwrap_or_else(|e| e.exit());
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let image = args
        .image
        .clone()
        .or_else(|| image_from_env(var))
        .map(|i| berth_core::job::shifter_image(&i))
        .transpose()
        .map_err(|e| anyhow::anyhow!("shifter: {e}"))?;
    let mut binds = Vec::new();
    for v in &args.volume {
        binds.extend(
            berth_core::job::shifter_volumes(v).map_err(|e| anyhow::anyhow!("shifter: {e}"))?,
        );
    }
    for m in args
        .module
        .iter()
        .filter(|m| !matches!(m.as_str(), "none" | ""))
    {
        berth_core::say!("shifter: warning: --module={m} ignored: Shifter's modules are a site's own additions to images, and berth has none (a job's GPUs bring their driver's libraries)");
    }
    // A job's container: berth's tools are bound at /.berth/bin in it, and nowhere else.
    let in_container = var("BERTH_JOB_ID").is_some()
        && std::path::Path::new(berth_agent::runner::TOOLS_IN_CONTAINER).is_dir();
    if in_container {
        in_place(&args, image, &binds)
    } else {
        exec_image(&args, image, binds)
    }
}

/// In a job's container: the command itself, with Shifter's environment, if what it asks
/// for is what the job has.
fn in_place(args: &Shifter, image: Option<String>, binds: &[String]) -> Result<i32> {
    let job = std::env::var("BERTH_JOB_ID").unwrap_or_default();
    let job_image = std::env::var("BERTH_IMAGE").unwrap_or_default();
    if let Some(image) =
        image.filter(|i| Reference::full_name(i) != Reference::full_name(&job_image))
    {
        bail!("shifter: job {job} runs in image {job_image}, and its script and tasks run in it: berth cannot change to {image} inside the job; submit it with #SBATCH --image={image}");
    }
    if !binds.is_empty() {
        bail!("shifter: --volume inside job {job}: a job's volumes are bound when it starts; give them when submitting it (#SBATCH --volume=SRC:DST)");
    }
    if args.entrypoint.is_some() {
        bail!("shifter: --entrypoint inside job {job}: its script already runs in the image; run the entrypoint's program by its name");
    }
    let Some((program, rest)) = args.command.split_first() else {
        bail!("shifter: name a command to run");
    };
    let mut command = std::process::Command::new(program);
    command.args(rest);
    if args.clearenv {
        command.env_clear();
    }
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("shifter: --env={kv}: expected NAME=VALUE");
        };
        command.env(k, v);
    }
    command.env("SHIFTER_RUNTIME", "1");
    if let Some(dir) = &args.workdir {
        command.current_dir(dir);
    }
    let e = command.exec();
    berth_core::say!("shifter: {program}: {e}");
    Ok(match e.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    })
}

/// Outside a job's container: `berth exec` (`berth run` for --entrypoint) of the image.
fn exec_image(args: &Shifter, image: Option<String>, binds: Vec<String>) -> Result<i32> {
    let Some(image) = image else {
        bail!("shifter: name the image (--image=docker:NAME, or $SHIFTER_IMAGE)");
    };
    let mut argv: Vec<String> = Vec::new();
    let verb = match (&args.entrypoint, args.command.is_empty()) {
        (Some(entry), _) if entry.is_empty() => "run",
        (Some(entry), _) => {
            argv.push(entry.clone());
            "exec"
        }
        (None, true) => bail!("shifter: name a command to run (or --entrypoint)"),
        (None, false) => "exec",
    };
    let mut options = vec!["--env=SHIFTER_RUNTIME=1".to_string()];
    options.extend(binds.into_iter().map(|b| format!("--bind={b}")));
    options.extend(args.env.iter().map(|e| format!("--env={e}")));
    if args.clearenv {
        options.push("--cleanenv".into());
    }
    if let Some(dir) = &args.workdir {
        options.push(format!("--pwd={dir}"));
    }
    let e = std::process::Command::new(super::sbcast::own_berth())
        .arg(verb)
        .args(options)
        .arg(image)
        .arg("--")
        .args(argv.iter().chain(&args.command))
        .exec();
    bail!("shifter: cannot start berth: {e}")
}

#[derive(Parser, Debug)]
#[command(
    name = "shifterimg",
    about = "The cluster's images, as Shifter's shifterimg shows them: images, pull, lookup"
)]
struct Shifterimg {
    /// Accepted (berth says what it does)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Shifter's image ACLs, with pull: the image is yours (users/YOU/...), shared with
    /// these users
    #[arg(long = "user", value_delimiter = ',')]
    users: Vec<String>,
    /// As --user, with these groups
    #[arg(long = "group", value_delimiter = ',')]
    groups: Vec<String>,
    /// images, pull IMAGE or lookup IMAGE
    #[arg(value_name = "COMMAND")]
    command: String,
    /// [docker:]NAME[:TAG]
    #[arg(value_name = "IMAGE")]
    image: Option<String>,
}

/// `shifterimg [-v] images | pull IMAGE | lookup IMAGE`.
pub fn shifterimg(words: Vec<String>) -> Result<i32> {
    let args = Shifterimg::try_parse_from(std::iter::once("shifterimg".to_string()).chain(words))
        .unwrap_or_else(|e| e.exit());
    let image = || -> Result<String> {
        let Some(image) = &args.image else {
            bail!(
                "shifterimg {}: name the image (docker:NAME[:TAG])",
                args.command
            );
        };
        berth_core::job::shifter_image(image).map_err(|e| anyhow::anyhow!("shifterimg: {e}"))
    };
    match args.command.as_str() {
        "images" => {
            for i in crate::image::cluster_images()? {
                let id = i.id.trim_start_matches("sha256:");
                for name in &i.names {
                    println!(
                        "berth      docker     READY    {:<10}   {} {name}",
                        &id[..10.min(id.len())],
                        crate::image::utc(i.imported).replace(' ', "T"),
                    );
                }
            }
            Ok(0)
        }
        "pull" => {
            let image = image()?;
            // With ACLs, as Shifter's: the image is the caller's own (pulled with their saved
            // login, if any), shared with those named.
            let acl = !args.users.is_empty() || !args.groups.is_empty();
            if acl && crate::settings::is_root() {
                bail!("shifterimg --user/--group: root's pulls are everyone's; a user's pull with ACLs is theirs, shared with those named");
            }
            let creds = match acl {
                true => crate::image::saved_login(&image)?,
                false => None,
            };
            let pulled = crate::image::cluster_pull(&image, creds, acl)?;
            let name = pulled.names.first().cloned().unwrap_or(image);
            println!("Pulled docker:{name}, status: READY (id {})", pulled.id);
            if acl {
                let request = berth_api::ShareRequest {
                    name,
                    users: args.users,
                    groups: args.groups,
                    remove: false,
                };
                println!("{}", crate::image::share(&request)?);
            }
            Ok(0)
        }
        "lookup" => {
            let wanted = image()?;
            let wanted_name = Reference::full_name(&wanted);
            let found = crate::image::cluster_images()?.into_iter().find(|i| {
                i.id == wanted || i.names.iter().any(|n| Reference::full_name(n) == wanted_name)
            });
            match found {
                Some(i) => {
                    println!("{}", i.id.trim_start_matches("sha256:"));
                    Ok(0)
                }
                None => {
                    berth_core::say!("shifterimg: {wanted} is not in the cluster's store: shifterimg pull docker:{wanted}");
                    Ok(1)
                }
            }
        }
        "login" => bail!("shifterimg login: save your credentials with `berth image login REGISTRY -u USER --password-stdin`, then `berth image pull --cluster REGISTRY/REPO:TAG` pulls a private image, yours alone (users/YOU/...)"),
        other => bail!("shifterimg: unknown command '{other}': images, pull IMAGE or lookup IMAGE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Shifter {
        Shifter::try_parse_from(std::iter::once("shifter").chain(words.iter().copied())).unwrap()
    }

    #[test]
    fn options_end_at_the_command() {
        let a = parse(&[
            "--image=docker:ubuntu:22.04",
            "-V",
            "/a:/b:ro",
            "python",
            "-v",
            "x.py",
        ]);
        assert_eq!(a.image.as_deref(), Some("docker:ubuntu:22.04"));
        assert_eq!(a.volume, ["/a:/b:ro"]);
        assert_eq!(a.command, ["python", "-v", "x.py"]);
        assert_eq!(a.verbose, 0);
        let a = parse(&["-iid:abcd", "-e", "A=1", "-E", "--entrypoint", "--", "-x"]);
        assert_eq!(a.image.as_deref(), Some("id:abcd"));
        assert_eq!(
            (a.env.as_slice(), a.clearenv),
            (&["A=1".to_string()][..], true)
        );
        assert_eq!(a.entrypoint.as_deref(), Some(""));
        assert_eq!(a.command, ["-x"]);
        assert_eq!(
            parse(&["--entrypoint=/run.sh"]).entrypoint.as_deref(),
            Some("/run.sh")
        );
    }

    #[test]
    fn the_image_comes_from_shifters_variables() {
        use crate::step::tests::env;
        assert_eq!(image_from_env(env(&[])), None);
        assert_eq!(
            image_from_env(env(&[("SHIFTER", "docker:a:1"), ("SHIFTER_IMAGE", "b")])).as_deref(),
            Some("docker:a:1")
        );
        assert_eq!(
            image_from_env(env(&[
                ("SHIFTER_IMAGE", "b:2"),
                ("SHIFTER_IMAGETYPE", "docker")
            ]))
            .as_deref(),
            Some("docker:b:2")
        );
        assert_eq!(
            image_from_env(env(&[("SLURM_SPANK_SHIFTER_IMAGE", "c")])).as_deref(),
            Some("c")
        );
    }
}
