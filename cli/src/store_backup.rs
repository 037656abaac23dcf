//! `kea-operator store-backup` and `store-restore`: the backup Jobs and restore init
//! containers of the embedded stores (SQLite, redb), which live in the service's pod.
//!
//! A backup fetches the consistent copy the service serves at `/admin/backup/{sql,nosql}`,
//! writes it as `.NAME.partial` and renames it once complete and flushed, so a run killed
//! half-way leaves nothing that looks like a backup; then it deletes the oldest beyond
//! `--keep` and reports the file in the termination message, as the server stores' runs do.
//! A restore copies the newest backup to the store's file, and only when there is none yet:
//! never over data.
//!
//! With a bucket (`--s3-bucket`), the folder is a scratch volume: the backup is uploaded
//! from it ([`crate::s3`]), and `store-upload` does the same for the dump of a server store.
//! `store-fetch` downloads a backup from a bucket for a restore, before the restore's own
//! init container runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kea_operator::{Error, Result};

use crate::s3::{Bucket, S3Args};

/// Where a run puts its backup and how it reports it: the flags `store-backup` and
/// `store-upload` share.
#[derive(clap::Args, Debug, Clone)]
pub struct Destination {
    /// The folder of this store's backups: on the target claim, or a scratch folder when
    /// they go to a bucket.
    #[arg(long)]
    pub dir: PathBuf,
    /// What ends the backup's file name: `.sqlite`, `.redb`, `.sql.gz`, `.rdb`.
    #[arg(long)]
    pub suffix: String,
    /// How many backups to keep.
    #[arg(long, default_value_t = 7)]
    pub keep: usize,
    /// How the status names the folder, e.g. pvc://backups/users-sqlite/ or
    /// s3://backups/kea/orders-mariadb/.
    #[arg(long)]
    pub location: String,
    /// Where the report goes (the kubelet reads it into the Job's status).
    #[arg(long, default_value = "/dev/termination-log")]
    pub report: PathBuf,
    /// The bucket, when the target is one (`--s3-prefix` is the store's folder in it).
    #[command(flatten)]
    pub s3: S3Args,
}

/// Flags of `kea-operator store-backup`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// The service's copy of the store, e.g. http://users.shop.svc.cluster.local:8080/admin/backup/sql.
    #[arg(long)]
    pub url: String,
    /// The token of the service's admin routes.
    #[arg(long, env = kea_contract::env::ADMIN_TOKEN, hide_env_values = true)]
    pub token: String,
    /// How long to retry while the service cannot be reached (a new pod's address reaches
    /// the NetworkPolicy engine a moment after it starts).
    #[arg(long, default_value_t = 60)]
    pub connect_seconds: u64,
    /// Where the backup goes.
    #[command(flatten)]
    pub to: Destination,
}

/// Flags of `kea-operator store-upload`: the newest backup of `--dir` goes to the bucket.
#[derive(clap::Args, Debug, Clone)]
pub struct UploadArgs {
    /// Where the backup is, and the bucket it goes to.
    #[command(flatten)]
    pub to: Destination,
}

/// Flags of `kea-operator store-fetch`.
#[derive(clap::Args, Debug, Clone)]
pub struct FetchArgs {
    /// `FOLDER/` (its newest backup is taken) or `FOLDER/FILE`, under `--s3-prefix`.
    #[arg(long)]
    pub path: String,
    /// What ends a backup's file name, e.g. `.rdb`.
    #[arg(long)]
    pub suffix: String,
    /// The folder to download to, as `TO/FOLDER/FILE`.
    #[arg(long)]
    pub to: PathBuf,
    /// Nothing is downloaded when this exists (the store's volume holds data).
    #[arg(long)]
    pub unless_exists: Vec<PathBuf>,
    /// The bucket; `--s3-prefix` is the target's prefix.
    #[command(flatten)]
    pub s3: S3Args,
}

/// Flags of `kea-operator store-restore`.
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// A backup file, or a folder whose newest backup is taken.
    #[arg(long)]
    pub from: PathBuf,
    /// What ends a backup's file name: `.sqlite` or `.redb`.
    #[arg(long)]
    pub suffix: String,
    /// The store's file; left alone when it exists.
    #[arg(long)]
    pub to: PathBuf,
    /// Where the backups are, to name it in messages, e.g. `PersistentVolumeClaim backups`.
    #[arg(long)]
    pub source: String,
}

fn failed(message: String) -> Error {
    Error::Io(std::io::Error::other(message))
}

/// Whether `name` is a complete backup ending in `suffix`: `YYYYMMDDTHHMMSS.mmmZ` and the suffix.
pub fn is_backup_name(name: &str, suffix: &str) -> bool {
    let Some(stamp) = name.strip_suffix(suffix) else {
        return false;
    };
    let bytes = stamp.as_bytes();
    bytes.len() == 20
        && bytes.iter().enumerate().all(|(i, byte)| match i {
            8 => *byte == b'T',
            15 => *byte == b'.',
            19 => *byte == b'Z',
            _ => byte.is_ascii_digit(),
        })
}

/// The complete backups in `dir`, oldest first (their names sort by time).
fn backups_in(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| is_backup_name(name, suffix))
        .collect();
    names.sort();
    Ok(names)
}

/// Takes one backup; see the module's description.
pub async fn backup(args: &BackupArgs) -> Result<()> {
    let to = &args.to;
    let bucket = Bucket::open(&to.s3)?;
    std::fs::create_dir_all(&to.dir)?;
    let name = format!(
        "{}{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        to.suffix
    );
    let partial = to.dir.join(format!(".{name}.partial"));
    let result = fetch(args, &partial).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let size = result?;
    std::fs::rename(&partial, to.dir.join(&name))?;
    std::fs::File::open(&to.dir)?.sync_all()?;
    let size = match &bucket {
        Some(bucket) => upload(bucket, to, &name).await?,
        None => {
            let backups = backups_in(&to.dir, &to.suffix)?;
            for old in backups.iter().rev().skip(to.keep.max(1)) {
                std::fs::remove_file(to.dir.join(old))?;
            }
            size
        }
    };
    report(to, &name, size)
}

/// Uploads the newest backup of a folder to a bucket: what a server store's backup runs after
/// its dump; see the module's description.
pub async fn upload_newest(args: &UploadArgs) -> Result<()> {
    let to = &args.to;
    let bucket =
        Bucket::open(&to.s3)?.ok_or_else(|| failed("store-upload needs --s3-bucket".to_owned()))?;
    let name = backups_in(&to.dir, &to.suffix)?.pop().ok_or_else(|| {
        failed(format!(
            "no backup ending in {} in {}: the dump wrote nothing",
            to.suffix,
            to.dir.display()
        ))
    })?;
    let size = upload(&bucket, to, &name).await?;
    report(to, &name, size)
}

/// Uploads `name` of the destination's folder to the bucket, then deletes the oldest there
/// beyond `keep`.
async fn upload(bucket: &Bucket, to: &Destination, name: &str) -> Result<u64> {
    let size = bucket.upload(&to.dir.join(name), name).await?;
    let backups = backups_in_bucket(bucket, "", &to.suffix).await?;
    for old in backups.iter().rev().skip(to.keep.max(1)) {
        bucket.delete(old).await?;
    }
    Ok(size)
}

/// The complete backups in `folder` of a bucket, oldest first (their names sort by time).
async fn backups_in_bucket(bucket: &Bucket, folder: &str, suffix: &str) -> Result<Vec<String>> {
    let mut names = bucket.names(folder).await?;
    names.retain(|name| is_backup_name(name, suffix));
    Ok(names)
}

/// Says where the backup went, in the termination message the reconciler reads.
fn report(to: &Destination, name: &str, size: u64) -> Result<()> {
    let location = format!("{}{name}", to.location);
    let message = serde_json::json!({ "location": location, "size": size });
    std::fs::write(&to.report, message.to_string())?;
    println!("backed up to {location} ({size} bytes)");
    Ok(())
}

/// Downloads a backup from a bucket for a restore; see the module's description.
pub async fn fetch_for_restore(args: &FetchArgs) -> Result<()> {
    if let Some(found) = args.unless_exists.iter().find(|path| path.exists()) {
        println!(
            "{} exists: the volume holds data, nothing downloaded",
            found.display()
        );
        return Ok(());
    }
    let bucket = Bucket::open(&args.s3)?
        .ok_or_else(|| failed("store-fetch needs --s3-bucket".to_owned()))?;
    let relative = if args.path.ends_with('/') || args.path.is_empty() {
        let newest = backups_in_bucket(&bucket, &args.path, &args.suffix)
            .await?
            .pop()
            .ok_or_else(|| {
                failed(format!(
                    "no backup ending in {} in {} (restoreFrom)",
                    args.suffix,
                    bucket.url(&args.path)
                ))
            })?;
        format!("{}{newest}", args.path)
    } else {
        args.path.clone()
    };
    let size = bucket.download(&relative, &args.to.join(&relative)).await?;
    println!("downloaded {} ({size} bytes)", bucket.url(&relative));
    Ok(())
}

/// Streams the service's copy into `partial`, flushed; returns its size.
async fn fetch(args: &BackupArgs, partial: &Path) -> Result<u64> {
    let client = crate::s3::http_client_builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| failed(format!("cannot make an HTTP client: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(args.connect_seconds);
    let mut response = loop {
        match client.get(&args.url).bearer_auth(&args.token).send().await {
            Ok(response) if response.status().is_success() => break response,
            Ok(response) if !response.status().is_server_error() || Instant::now() >= deadline => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let body: String = body.chars().take(500).collect();
                return Err(failed(format!("{} answered {status}: {body}", args.url)));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(failed(format!(
                    "{} cannot be reached within {}s: {e}",
                    args.url, args.connect_seconds
                )));
            }
            // Not reachable yet, or unavailable for a moment: try again.
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    let expected = response.content_length();
    let mut file = std::fs::File::create(partial)?;
    let mut size: u64 = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(format!("the copy from {} broke off: {e}", args.url)))?
    {
        file.write_all(&chunk)?;
        size += chunk.len() as u64;
    }
    if expected.is_some_and(|expected| expected != size) || size == 0 {
        return Err(failed(format!(
            "the copy from {} is {size} bytes long, not the {} announced",
            args.url,
            expected.unwrap_or_default()
        )));
    }
    file.sync_all()?;
    Ok(size)
}

/// Restores one store; see the module's description.
pub fn restore(args: &RestoreArgs) -> Result<()> {
    if args.to.exists() {
        println!(
            "{} exists: the volume holds data, nothing restored",
            args.to.display()
        );
        return Ok(());
    }
    let from = &args.source;
    let source = if args.from.is_dir() {
        let newest = backups_in(&args.from, &args.suffix)?.pop().ok_or_else(|| {
            failed(format!(
                "no backup ending in {} in {} on {from} (restoreFrom)",
                args.suffix,
                args.from.display()
            ))
        })?;
        args.from.join(newest)
    } else if args.from.is_file() {
        args.from.clone()
    } else {
        return Err(failed(format!(
            "{} is not on {from} (restoreFrom.path)",
            args.from.display()
        )));
    };
    let dir = args
        .to
        .parent()
        .ok_or_else(|| failed(format!("{} has no folder", args.to.display())))?;
    let partial = dir.join(".restore.partial");
    let size = std::fs::copy(&source, &partial)?;
    std::fs::File::open(&partial)?.sync_all()?;
    // A journal left by an earlier database of that name would be replayed into the restored
    // one by SQLite, and corrupt it.
    let name = args.to.to_string_lossy();
    for journal in ["-wal", "-shm", "-journal"] {
        match std::fs::remove_file(format!("{name}{journal}")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    std::fs::rename(&partial, &args.to)?;
    std::fs::File::open(dir)?.sync_all()?;
    println!(
        "restored {} ({size} bytes) from {from} to {}",
        source.display(),
        args.to.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_backups_of_the_suffix_count() {
        assert!(is_backup_name("20261206T030000.123Z.sqlite", ".sqlite"));
        assert!(!is_backup_name("20261206T030000.123Z.redb", ".sqlite"));
        assert!(!is_backup_name(
            ".20261206T030000.123Z.sqlite.partial",
            ".sqlite"
        ));
        assert!(!is_backup_name("2026126T030000.123Z.sqlite", ".sqlite"));
        assert!(!is_backup_name("notes.sqlite", ".sqlite"));
    }

    #[test]
    fn a_restore_never_replaces_a_file_and_takes_the_newest_backup() {
        let backups = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("20261205T030000.000Z.sqlite", "old"),
            ("20261206T030000.000Z.sqlite", "new"),
            (".20261207T030000.000Z.sqlite.partial", "half"),
            ("20261208T030000.000Z.redb", "other engine"),
        ] {
            std::fs::write(backups.path().join(name), content).unwrap();
        }
        let to = data.path().join("relational.sqlite");
        std::fs::write(data.path().join("relational.sqlite-wal"), "stale journal").unwrap();
        let args = RestoreArgs {
            from: backups.path().to_owned(),
            suffix: ".sqlite".into(),
            to: to.clone(),
            source: "PersistentVolumeClaim backups".into(),
        };
        restore(&args).unwrap();
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "new");
        assert!(
            !data.path().join("relational.sqlite-wal").exists(),
            "a stale journal would be replayed into the restored database"
        );
        std::fs::write(&to, "live data").unwrap();
        restore(&args).unwrap();
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "live data");

        let empty = tempfile::tempdir().unwrap();
        let error = restore(&RestoreArgs {
            from: empty.path().to_owned(),
            to: data.path().join("other.sqlite"),
            ..args.clone()
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("no backup ending in .sqlite"),
            "{error}"
        );
        assert!(
            error.to_string().contains("PersistentVolumeClaim backups"),
            "{error}"
        );
    }
}
