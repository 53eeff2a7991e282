//! `berth image ...`: import, ls, inspect, rm, prune.

use crate::settings::Settings;
use anyhow::{Context, Result};
use berth_image::{ImageRecord, ImportOptions, Store};
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import a docker-archive (`docker save`), an OCI layout or archive, a root
    /// filesystem (directory or tarball), a squashfs file (enroot's .sqsh) or an Apptainer
    /// SIF image
    Import {
        path: PathBuf,
        /// Name the image (NAME[:TAG]); overrides any name in the archive
        #[arg(long)]
        name: Option<String>,
        /// Upload the file to the controller ($BERTH_SOCKET), into the cluster's store,
        /// which jobs run from (a user's is named users/USER/NAME[:TAG])
        #[arg(long, requires = "name")]
        cluster: bool,
    },
    /// Pull an image from an OCI distribution registry (HOST[:PORT]/REPO[:TAG|@DIGEST],
    /// or Apptainer's docker://HOST[:PORT]/REPO[:TAG])
    Pull {
        #[arg(value_parser = without_scheme)]
        reference: String,
        /// Credentials for the registry, overriding those saved by `berth image login`
        #[arg(long, value_name = "USER:PASSWORD")]
        creds: Option<String>,
        /// Have the controller ($BERTH_SOCKET) pull it into the cluster's store, which jobs
        /// run from (users what the administrator allows), with its own credentials; with
        /// yours (--creds, or --private) the image is yours alone: users/YOU/...
        #[arg(long)]
        cluster: bool,
        /// With --cluster: the image is yours alone (to share with `berth image share`),
        /// pulled with the credentials `berth image login` saved for the registry, or
        /// anonymously where none are saved
        #[arg(long, requires = "cluster")]
        private: bool,
    },
    /// Save credentials for a registry (checked against it first)
    Login {
        registry: String,
        #[arg(short, long)]
        username: String,
        /// Read the password from standard input
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Forget the credentials `login` saved for a registry
    Logout { registry: String },
    /// List images
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
        /// The cluster's images (the controller's store, which jobs run from)
        #[arg(long)]
        cluster: bool,
    },
    /// Show everything about an image
    Inspect {
        image: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove image names, and images left without one (by id: the image and all its names)
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        /// From the cluster's store (users: their own uploads, users/USER/...)
        #[arg(long)]
        cluster: bool,
        /// Remove an image named by its id with all its names, and a name of an image in use
        /// (which stays, nameless, until pruned), as docker rmi -f
        #[arg(short, long)]
        force: bool,
    },
    /// Remove images without a name and leftovers of interrupted imports
    Prune,
    /// Give an image another name (as docker tag)
    Tag {
        /// The image: a name or id
        image: String,
        /// Its new name, REPO[:TAG]
        name: String,
    },
    /// Share an image of yours in the cluster's store (users/YOU/...) with other users and
    /// the members of groups, whose jobs may then run it (as Shifter's image ACLs)
    Share {
        /// The image's name, users/YOU/REPO[:TAG]
        name: String,
        /// Users to share it with (comma-separated, or the option repeated)
        #[arg(long = "user", value_delimiter = ',')]
        users: Vec<String>,
        /// Groups whose members to share it with (comma-separated, or repeated)
        #[arg(long = "group", value_delimiter = ',')]
        groups: Vec<String>,
        /// Share it with these users and groups no more
        #[arg(long)]
        remove: bool,
    },
}

pub use berth_core::quantity::human_size;

/// Which running containers use the image, in words, if any do (of those this process may
/// see: root all, a user their own).
pub fn in_use(store: &Store, record: &ImageRecord) -> Option<String> {
    let [file, dir] = store.files(record);
    let pids = berth_runtime::users_of(&[&file, &dir]);
    let (first, more) = pids.split_first()?;
    Some(match more.len() {
        0 => format!("process {first}"),
        n => format!("process {first} and {n} more"),
    })
}

/// UTC `YYYY-MM-DD HH:MM` from seconds since the epoch.
pub fn utc(secs: u64) -> String {
    let (y, m, d) = berth_core::job::civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Says so where an image is for another architecture than this machine's (as Docker warns
/// of a platform that is not the host's).
pub fn warn_if_foreign(name: &str, record: &ImageRecord) {
    if let Some(arch) = record.foreign_architecture() {
        berth_core::say!(
            "berth: warning: {name} is an image for linux/{arch}, and this machine is linux/{}: its programs run here only through an emulator (qemu-user with binfmt_misc)",
            berth_image::host_arch()
        );
    }
}

/// Does `what` to each of `items`, going on past those it fails for (as docker rmi does):
/// each failure is said, the last one returned.
fn each_of(items: &[String], mut what: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let mut failed = None;
    for item in items {
        if let Err(e) = what(item) {
            if let Some(earlier) = failed.replace(e) {
                berth_core::say!("berth: {earlier:#}");
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

fn name_of(r: &ImageRecord) -> String {
    r.names.first().cloned().unwrap_or_else(|| "<none>".into())
}

/// Shares a private image name (or no longer, `remove`); says with whom it is shared now.
pub fn share(request: &berth_api::ShareRequest) -> Result<String> {
    let share: berth_api::ImageShare =
        crate::client::request("POST", "/v1/images/share", Some(request))?;
    Ok(shared_with(&share))
}

/// `users/alice/app:1 is shared with users bob, carol and groups lab`.
fn shared_with(share: &berth_api::ImageShare) -> String {
    let mut whom = Vec::new();
    if !share.users.is_empty() {
        whom.push(format!("users {}", share.users.join(", ")));
    }
    if !share.groups.is_empty() {
        whom.push(format!("groups {}", share.groups.join(", ")));
    }
    match whom.is_empty() {
        true => format!("{} is shared with no one", share.name),
        false => format!("{} is shared with {}", share.name, whom.join(" and ")),
    }
}

/// The cluster's images, as the controller lists them.
pub fn cluster_images() -> Result<Vec<berth_api::ImageInfo>> {
    crate::client::request("GET", "/v1/images", None::<&()>)
}

/// The cluster's name of the image file `image` (a path, as a job names it, from the
/// current directory): the caller's upload of the file as it is now, made if the cluster has
/// none, named as `berth exec` names its import of a file (`container::file_image_name`;
/// the controller puts a user's under `users/USER/`); the file's earlier uploads go, where
/// no job uses them.
pub fn uploaded(image: &str) -> Result<String> {
    let path = std::fs::canonicalize(image)
        .with_context(|| format!("cannot find the image file {image}"))?;
    let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {image}"))?;
    if meta.is_dir() {
        anyhow::bail!("{image} is a directory: a job's image is a file (uploaded into the cluster's store at submission) or an image there; make a tarball of it (tar -C {image} -cf image.tar .) and name that");
    }
    let (repository, name) = crate::container::file_image_name(&path, &meta);
    // A name of the cluster's for `wanted` (`file/...`, or a user's `users/USER/file/...`).
    let names = |wanted: &str, n: &str| n == wanted || n.ends_with(&format!("/{wanted}"));
    let images = cluster_images()?;
    let all = || images.iter().flat_map(|i| &i.names);
    if let Some(found) = all().find(|n| names(&name, n)) {
        return Ok(found.clone());
    }
    berth_core::say!(
        "berth: uploading {} into the cluster's store (once, and again if it changes)",
        path.display()
    );
    let upload = cluster_import(&path, &name)?;
    let full = upload
        .names
        .iter()
        .find(|n| names(&name, n))
        .cloned()
        .with_context(|| format!("the controller named the upload of {} {}, not {name}: is it the same berth version?", path.display(), upload.names.join(", ")))?;
    // The file's earlier uploads, which it no longer is (those jobs use stay: 409).
    let earlier = all().filter(|n| {
        n.rsplit_once(':')
            .is_some_and(|(r, _)| names(&repository, r))
    });
    for old in earlier {
        let request = berth_api::RemoveImageRequest {
            reference: old.clone(),
        };
        let _ = crate::client::request::<berth_api::RemovedImage>(
            "POST",
            "/v1/images/remove",
            Some(&request),
        );
    }
    Ok(full)
}

/// The login `berth image login` saved for `reference`'s registry, if any.
pub fn saved_login(reference: &str) -> Result<Option<(String, String)>> {
    let registry = berth_image::PullReference::parse(reference)?.registry;
    Ok(berth_image::credentials_from(
        &crate::settings::auth_file(),
        &registry,
    ))
}

/// Has the controller pull `reference` into the cluster's store: a `private` pull (with
/// `creds`, the caller's own, or anonymous) is a user's alone; otherwise the controller
/// pulls with its own credentials.
pub fn cluster_pull(
    reference: &str,
    creds: Option<(String, String)>,
    private: bool,
) -> Result<berth_api::ImageInfo> {
    if !private {
        let request = berth_api::PullRequest {
            reference: reference.to_string(),
        };
        return crate::client::request("POST", "/v1/images/pull", Some(&request)).map(warned);
    }
    let request = berth_api::PrivatePullRequest {
        reference: reference.to_string(),
        credentials: creds
            .map(|(username, password)| berth_api::RegistryCredentials { username, password }),
    };
    crate::client::request("POST", "/v1/images/pull/private", Some(&request)).map(warned)
}

/// `image`, just taken into the cluster's store, once what the controller warned of beside
/// it is said.
fn warned(image: berth_api::ImageInfo) -> berth_api::ImageInfo {
    for w in &image.warnings {
        berth_core::say!("berth: warning: {w}");
    }
    image
}

/// The first 12 digits of an image id as the API gives it (`sha256:HEX`), as `berth image
/// ls` shows ids.
fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Says that `image` came into the cluster's store as `name` (`done`: Pulled, Imported).
fn into_cluster(
    out: &mut impl Write,
    done: &str,
    name: &str,
    image: &berth_api::ImageInfo,
) -> Result<()> {
    writeln!(
        out,
        "{done} {name} into the cluster's store (id {}, {})",
        short_id(&image.id),
        human_size(image.size)
    )?;
    Ok(())
}

/// Uploads the image file `path` to the controller, to be imported as `name` into the
/// cluster's store.
fn cluster_import(path: &std::path::Path, name: &str) -> Result<berth_api::ImageInfo> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        anyhow::bail!(
            "{}: --cluster uploads an image file (an archive, a tarball, a squashfs or SIF file); make a tarball of a directory first (tar -C DIR -cf image.tar .)",
            path.display()
        );
    }
    let file_name = path
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let query = format!(
        "/v1/images/import?name={}&file={}",
        query_value(name),
        query_value(&file_name)
    );
    let body = crate::client::Body {
        content_type: "application/octet-stream",
        length: meta.len(),
        data: &mut file,
        upload: true,
    };
    crate::client::request_body("POST", &query, body).map(warned)
}

/// What `berth image rm` did to `image`: its name taken off, images deleted.
fn report_removal(
    out: &mut impl Write,
    image: &str,
    untagged: bool,
    deleted: &[String],
) -> Result<()> {
    if untagged {
        writeln!(out, "Untagged: {image}")?;
    }
    for id in deleted {
        writeln!(out, "Deleted: {id}")?;
    }
    Ok(())
}

/// `--creds USER:PASSWORD`, split.
fn user_password(creds: &str) -> Result<(String, String)> {
    creds
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .context("--creds takes USER:PASSWORD")
}

/// `value` percent-encoded for a URL's query (all but unreserved characters).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `berth image ls`: `images` as JSON, or a table of each one's `row` (names, short id,
/// size, imported), a line per name (`<none>` for an image without one).
fn list<'a, T: serde::Serialize>(
    out: &mut impl Write,
    json: bool,
    images: &'a [T],
    row: impl Fn(&'a T) -> (&'a [String], String, u64, u64),
) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, images)?;
        writeln!(out)?;
        return Ok(());
    }
    let none = ["<none>".to_string()];
    let rows: Vec<(&String, String, u64, u64)> = images
        .iter()
        .flat_map(|image| {
            let (names, short, size, imported) = row(image);
            let names = if names.is_empty() { &none[..] } else { names };
            names
                .iter()
                .map(move |n| (n, short.clone(), size, imported))
        })
        .collect();
    // As wide as the longest name (an image file's `file/...` names run long).
    let width = rows
        .iter()
        .map(|r| r.0.len() + 1)
        .max()
        .unwrap_or(0)
        .max(40);
    writeln!(
        out,
        "{:<width$} {:<12} {:>9}  IMPORTED",
        "NAME", "ID", "SIZE"
    )?;
    for (n, short, size, imported) in rows {
        writeln!(
            out,
            "{n:<width$} {short:<12} {:>9}  {}",
            human_size(size),
            utc(imported)
        )?;
    }
    Ok(())
}

/// An image reference with Apptainer's `docker://` before it taken as it is without.
fn without_scheme(reference: &str) -> Result<String, std::convert::Infallible> {
    Ok(reference.trim_start_matches("docker://").to_string())
}

pub fn run(settings: &Settings, cmd: ImageCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ImageCommand::Pull {
            reference,
            creds,
            cluster: true,
            private,
        } => {
            // The caller's own credentials for the registry (given, or saved by `berth
            // image login`): what the controller pulls with them is the caller's alone.
            let creds = match creds {
                Some(c) => Some(user_password(&c)?),
                None if private => saved_login(&reference)?,
                None => None,
            };
            let private = private || creds.is_some();
            let image = cluster_pull(&reference, creds, private)?;
            let name = image.names.first().cloned().unwrap_or(reference);
            return into_cluster(&mut out, "Pulled", &name, &image);
        }
        ImageCommand::Import {
            path,
            name: Some(name),
            cluster: true,
        } => {
            let image = cluster_import(&path, &name)?;
            let name = image.names.first().unwrap_or(&name);
            return into_cluster(&mut out, "Imported", name, &image);
        }
        ImageCommand::Rm {
            images,
            cluster: true,
            ..
        } => {
            return each_of(&images, |image| {
                let request = berth_api::RemoveImageRequest {
                    reference: image.to_string(),
                };
                let removed: berth_api::RemovedImage =
                    crate::client::request("POST", "/v1/images/remove", Some(&request))?;
                report_removal(&mut out, image, removed.untagged, &removed.deleted)
            });
        }
        ImageCommand::Ls {
            json,
            cluster: true,
        } => {
            let images = cluster_images()?;
            list(&mut out, json, &images, |i| {
                (&i.names[..], short_id(&i.id), i.size, i.imported)
            })?;
            if !json {
                for share in images.iter().flat_map(|i| &i.shares) {
                    writeln!(out, "{}", shared_with(share))?;
                }
            }
            return Ok(());
        }
        ImageCommand::Share {
            name,
            users,
            groups,
            remove,
        } => {
            if users.is_empty() && groups.is_empty() {
                anyhow::bail!("name whom to share {name} with: --user USER, --group GROUP");
            }
            let request = berth_api::ShareRequest {
                name,
                users,
                groups,
                remove,
            };
            writeln!(out, "{}", share(&request)?)?;
            return Ok(());
        }
        _ => {}
    }
    let store = settings.store()?;
    match cmd {
        ImageCommand::Import { path, name, .. } => {
            for record in store.import_all(&path, &ImportOptions { name })? {
                if record.devices_dropped > 0 {
                    berth_core::say!(
                        "berth: left out {} device node(s): containers get their own /dev",
                        record.devices_dropped
                    );
                }
                writeln!(
                    out,
                    "Imported {} (id {}, {})",
                    name_of(&record),
                    record.id.short(),
                    human_size(record.size)
                )?;
                warn_if_foreign(&name_of(&record), &record);
            }
        }
        ImageCommand::Pull {
            reference, creds, ..
        } => {
            let creds = creds.as_deref().map(user_password).transpose()?;
            let record = store.pull(&reference, &settings.registry(creds))?;
            // The name just pulled, not whichever name the image had first.
            let name = berth_image::PullReference::parse(&reference)?.name();
            writeln!(
                out,
                "Pulled {name} (id {}, {})",
                record.id.short(),
                human_size(record.size)
            )?;
            warn_if_foreign(&name, &record);
        }
        ImageCommand::Logout { registry } => {
            let auth_file = crate::settings::auth_file();
            if !berth_image::remove_credentials(&auth_file, &registry)? {
                anyhow::bail!(
                    "not logged in to {registry}: {} has no credentials for it",
                    auth_file.display()
                );
            }
            writeln!(out, "Removed login credentials for {registry}")?;
        }
        ImageCommand::Login {
            registry,
            username,
            password_stdin: _,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            let auth_file = crate::settings::auth_file();
            berth_image::login(
                &registry,
                &username,
                password,
                &settings.registry(None),
                &auth_file,
            )?;
            writeln!(
                out,
                "Login Succeeded (credentials saved in {})",
                auth_file.display()
            )?;
        }
        ImageCommand::Ls { json, .. } => {
            let images = store.list()?;
            list(&mut out, json, &images, |r| {
                (&r.names[..], r.id.short().to_string(), r.size, r.imported)
            })?;
        }
        ImageCommand::Inspect { image, json } => {
            let r = store.resolve(&image)?;
            if json {
                let config: serde_json::Value = serde_json::from_slice(&store.config_json(&r)?)?;
                let mut value = serde_json::to_value(&r)?;
                value["oci_config"] = config;
                value["squashfs"] = store.squashfs(&r).display().to_string().into();
                serde_json::to_writer_pretty(&mut out, &value)?;
                writeln!(out)?;
            } else {
                let c = &r.config;
                let list = |v: &Option<Vec<String>>| {
                    v.as_ref().map_or("-".to_string(), |v| format!("{v:?}"))
                };
                writeln!(out, "Id:           {}", r.id)?;
                writeln!(
                    out,
                    "Names:        {}",
                    if r.names.is_empty() {
                        "<none>".into()
                    } else {
                        r.names.join(", ")
                    }
                )?;
                writeln!(
                    out,
                    "Size:         {} (squashfs, {} layer(s) flattened)",
                    human_size(r.size),
                    r.layers
                )?;
                writeln!(
                    out,
                    "Imported:     {} UTC from {}",
                    utc(r.imported),
                    r.source
                )?;
                writeln!(
                    out,
                    "Architecture: {}",
                    if r.architecture.is_empty() {
                        "-"
                    } else {
                        &r.architecture
                    }
                )?;
                writeln!(out, "Entrypoint:   {}", list(&c.entrypoint))?;
                writeln!(out, "Cmd:          {}", list(&c.cmd))?;
                writeln!(
                    out,
                    "WorkingDir:   {}",
                    c.working_dir.as_deref().unwrap_or("-")
                )?;
                // (berth runs it as the caller: the image's user is what it was built for.)
                writeln!(out, "User:         {}", c.user.as_deref().unwrap_or("-"))?;
                writeln!(out, "Env:")?;
                for e in &c.env {
                    writeln!(out, "  {e}")?;
                }
                if !c.labels.is_empty() {
                    writeln!(out, "Labels:")?;
                    for (key, value) in &c.labels {
                        writeln!(out, "  {key}={value}")?;
                    }
                }
                writeln!(out, "File:         {}", store.squashfs(&r).display())?;
            }
        }
        ImageCommand::Tag { image, name } => {
            let record = store.tag(&image, &name)?;
            writeln!(
                out,
                "Tagged {} (id {})",
                berth_image::Reference::full_name(&name),
                record.id.short()
            )?;
        }
        ImageCommand::Rm { images, force, .. } => {
            let remove = |image: &str, out: &mut dyn Write| -> Result<()> {
                let before = store.resolve(image)?;
                // By a name, that name goes; by the id, every name (docker's way: only
                // when forced, where there are several).
                let name = berth_image::Reference::parse(image)
                    .map(|r| r.to_string())
                    .ok()
                    .filter(|n| before.names.contains(n));
                if name.is_none() && before.names.len() > 1 && !force {
                    anyhow::bail!(
                        "image {image} has {} names ({}): remove them one by one, or all with the image: berth image rm --force {image}",
                        before.names.len(),
                        before.names.join(", ")
                    );
                }
                let deleted = match store.remove(image, |r| in_use(&store, r)) {
                    // Forced, a name goes all the same (docker rmi -f's way): the image
                    // stays, nameless, while in use.
                    Err(berth_image::ImageError::InUse { by, .. }) if force && name.is_some() => {
                        store.untag(image)?;
                        berth_core::say!("berth: the image stays while in use by a running container ({by}): berth image prune removes it afterwards");
                        Vec::new()
                    }
                    removed => removed?,
                };
                for untagged in name
                    .as_ref()
                    .map_or(&before.names[..], std::slice::from_ref)
                {
                    writeln!(out, "Untagged: {untagged}")?;
                }
                for id in &deleted {
                    writeln!(out, "Deleted: {id}")?;
                }
                Ok(())
            };
            each_of(&images, |image| remove(image, &mut out))?;
        }
        ImageCommand::Share { .. } => unreachable!("shared in the cluster's store, above"),
        ImageCommand::Prune => {
            let deleted = store.prune(|r| in_use(&store, r))?;
            for id in &deleted {
                writeln!(out, "Deleted: {id}")?;
            }
            writeln!(out, "{} image(s) removed", deleted.len())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
    }
}
