//! The bucket side of the stores' backups (`backup.target.s3`, `restoreFrom.s3`): uploads a
//! finished backup file, deletes the oldest beyond `keep`, and downloads the newest for a
//! restore. Any S3-compatible server, addressed path-style (`ENDPOINT/BUCKET/KEY`), over HTTP
//! or HTTPS. An HTTPS endpoint's certificate is checked against the system's authorities
//! (the image's CA bundle) and the ones of `--s3-ca-file`.
//!
//! An object appears in the bucket only once its upload is complete (one PUT, or a multipart
//! upload of 8 MiB parts that is completed last), so a run killed half-way leaves nothing that
//! looks like a backup, as on a claim.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    Certificate, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kea_operator::{Error, Result};

/// Flags that name a bucket; without `--s3-bucket`, the backups are on a claim.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct S3Args {
    /// The bucket of an S3-compatible object store.
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// The object store's URL, e.g. https://s3.eu-west-1.amazonaws.com or
    /// http://minio.storage.svc:9000.
    #[arg(long, requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// PEM certificate(s) of the authority that signs an https:// endpoint's certificate,
    /// trusted beside the system's.
    #[arg(long, requires = "s3_bucket")]
    pub s3_ca_file: Option<PathBuf>,
    /// The bucket's region.
    #[arg(long, default_value = "us-east-1")]
    pub s3_region: String,
    /// The key prefix of the objects, e.g. `kea/orders-mariadb/` (empty: the bucket's root).
    #[arg(long, default_value = "")]
    pub s3_prefix: String,
    /// The access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// The secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
}

/// Size of the parts of a multipart upload (S3 wants at least 5 MiB but for the last one);
/// a smaller backup is one PUT.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: the memory of an upload is about this many parts.
const PARTS_IN_FLIGHT: usize = 4;

fn failed(message: String) -> Error {
    Error::Io(std::io::Error::other(message))
}

/// A reqwest client builder, with the process's TLS crypto provider (ring, as kube's) set up
/// first: reqwest's TLS comes in with the S3 client, and a client built before a provider is
/// set panics.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

fn install_crypto_provider() {
    // An error only says a provider is set already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of a PEM file, with an error that names the file when it holds none.
fn certificate_authorities(file: &Path) -> Result<Vec<Certificate>> {
    let pem = std::fs::read(file)
        .map_err(|e| failed(format!("cannot read the CA file {}: {e}", file.display())))?;
    let unusable = |why: String| {
        failed(format!(
            "{} holds no usable PEM certificate ({why}): give the authority's certificate, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----",
            file.display()
        ))
    };
    let certificates = Certificate::from_pem_bundle(&pem).map_err(|e| unusable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable("no CERTIFICATE section".to_owned()));
    }
    Ok(certificates)
}

/// A bucket and the key prefix the objects go under.
pub struct Bucket {
    store: Arc<AmazonS3>,
    name: String,
    endpoint: String,
    prefix: String,
}

impl Bucket {
    /// The bucket the flags name, or `None` without `--s3-bucket`.
    pub fn open(args: &S3Args) -> Result<Option<Self>> {
        let Some(name) = args.s3_bucket.clone() else {
            return Ok(None);
        };
        install_crypto_provider();
        let Some(endpoint) = args.s3_endpoint.clone() else {
            return Err(failed(format!(
                "bucket {name} has no endpoint: set one, e.g. https://s3.eu-west-1.amazonaws.com"
            )));
        };
        let plain_http = endpoint.starts_with("http://");
        if !plain_http && !endpoint.starts_with("https://") {
            return Err(failed(format!(
                "{endpoint}: the endpoint must be an http:// or https:// URL, e.g. https://s3.eu-west-1.amazonaws.com"
            )));
        }
        let mut options = ClientOptions::new()
            .with_allow_http(plain_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        if let Some(file) = &args.s3_ca_file {
            for certificate in certificate_authorities(file)? {
                options = options.with_root_certificate(certificate);
            }
        }
        let (Some(key_id), Some(secret)) = (&args.s3_access_key_id, &args.s3_secret_access_key)
        else {
            return Err(failed(format!(
                "no credentials for bucket {name}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )));
        };
        let store = AmazonS3Builder::new()
            .with_bucket_name(&name)
            .with_region(&args.s3_region)
            .with_endpoint(&endpoint)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .with_client_options(options)
            // A target that is down or refuses fails the run within a minute, so its status
            // says so within one period, rather than after retrying for minutes.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            })
            .build()
            .map_err(|e| failed(format!("bucket {name} at {endpoint}: {e}")))?;
        let prefix = args.s3_prefix.trim_matches('/');
        Ok(Some(Self {
            store: Arc::new(store),
            name,
            endpoint,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }))
    }

    /// The key of `name` under the prefix.
    fn key(&self, name: &str) -> Key {
        Key::from(format!("{}{name}", self.prefix))
    }

    /// `s3://BUCKET/KEY`, how messages name an object.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}{name}", self.name, self.prefix)
    }

    /// What went wrong with `what`, in words that say what to fix.
    fn explain(&self, what: &str, error: object_store::Error) -> Error {
        // The whole chain: the words that tell (a refused connection, the server's code) are
        // often in a source of the error, not in the error itself.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text = format!("{text}: {cause_text}");
            }
            source = cause.source();
        }
        let hint = if text.contains("NoSuchBucket") {
            format!(
                "bucket {} does not exist at {}: create it, or name an existing one",
                self.name, self.endpoint
            )
        } else if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403",
        ]
        .iter()
        .any(|word| text.contains(word))
        {
            format!(
                "{} refused the credentials for bucket {} (check the Secret's access key id and secret access key)",
                self.endpoint, self.name
            )
        } else if text.contains("NotValidForName") {
            format!(
                "{}'s TLS certificate is not trusted: it is not issued for that host name (use the name the certificate names)",
                self.endpoint
            )
        } else if text.contains("certificate") {
            format!(
                "{}'s TLS certificate is not trusted: no authority known here signs it (for a private authority, give its PEM certificate in caSecretKeyRef, or --s3-ca-file)",
                self.endpoint
            )
        } else if text.contains("tcp connect error") || text.contains("dns error") {
            format!(
                "{} cannot be reached from this pod (check the endpoint, and that a NetworkPolicy lets the backup pods out to it)",
                self.endpoint
            )
        } else {
            String::new()
        };
        let text: String = text.chars().take(600).collect();
        if hint.is_empty() {
            failed(format!("{what}: {text}"))
        } else {
            failed(format!("{what}: {hint}; the server said: {text}"))
        }
    }

    /// Uploads `file` as `name` under the prefix; returns its size.
    pub async fn upload(&self, file: &Path, name: &str) -> Result<u64> {
        let what = format!("uploading {} to {}", file.display(), self.url(name));
        let key = self.key(name);
        let size = tokio::fs::metadata(file).await?.len();
        if size <= PART_BYTES as u64 {
            let bytes = tokio::fs::read(file).await?;
            self.store
                .put(&key, bytes.into())
                .await
                .map_err(|e| self.explain(&what, e))?;
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| self.explain(&what, e))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut source = tokio::fs::File::open(file).await?;
        let mut buffer = vec![0u8; 1024 * 1024];
        loop {
            let read = match source.read(&mut buffer).await {
                Ok(read) => read,
                Err(e) => {
                    // Leaves no half-done multipart upload behind.
                    let _ = parts.abort().await;
                    return Err(e.into());
                }
            };
            if read == 0 {
                break;
            }
            if let Err(e) = parts.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = parts.abort().await;
                return Err(self.explain(&what, e));
            }
            parts.write(&buffer[..read]);
        }
        parts.finish().await.map_err(|e| self.explain(&what, e))?;
        Ok(size)
    }

    /// The names of the objects directly under `folder` (a key prefix relative to the
    /// bucket's prefix, empty or ending in '/'), sorted.
    pub async fn names(&self, folder: &str) -> Result<Vec<String>> {
        let prefix = self.key(folder);
        let what = format!("listing {}", self.url(folder));
        let mut listing = self.store.list(Some(&prefix));
        let mut names = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.explain(&what, e))?;
            let name = meta
                .location
                .as_ref()
                .strip_prefix(prefix.as_ref())
                .map(|rest| rest.trim_start_matches('/'));
            if let Some(name) = name.filter(|name| !name.is_empty() && !name.contains('/')) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes the object `name` under the prefix.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.store
            .delete(&self.key(name))
            .await
            .map_err(|e| self.explain(&format!("deleting {}", self.url(name)), e))
    }

    /// Downloads the object `name` to `to` (written as a partial file, flushed, then renamed);
    /// returns its size.
    pub async fn download(&self, name: &str, to: &Path) -> Result<u64> {
        let what = format!("downloading {}", self.url(name));
        let object = self.store.get(&self.key(name)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => failed(format!(
                "{} does not exist (restoreFrom.path)",
                self.url(name)
            )),
            other => self.explain(&what, other),
        })?;
        let dir = to
            .parent()
            .ok_or_else(|| failed(format!("{} has no folder", to.display())))?;
        tokio::fs::create_dir_all(dir).await?;
        let partial = dir.join(".download.partial");
        let mut file = tokio::fs::File::create(&partial).await?;
        let mut stream = object.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.explain(&what, e))?;
            file.write_all(&chunk).await?;
            size += chunk.len() as u64;
        }
        file.sync_all().await?;
        tokio::fs::rename(&partial, to).await?;
        Ok(size)
    }
}
