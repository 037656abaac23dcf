//! The end-to-end suite: one test binary (to keep the build short), one module per area.
//! Every test is `#[ignore]`d: a plain `cargo test` lists them as ignored. Run them with
//! `hack/e2e.sh` (kind), or by hand against any cluster with the operator and deploy/examples
//! installed: `KEA_E2E=1 cargo test -p kea-e2e --test e2e -- --ignored --test-threads=2`.
#![allow(clippy::unwrap_used)]

mod backup;
mod backup_s3;
mod disruption;
mod examples;
mod lifecycle;
mod namespaced;
mod network;
mod operator_restart;
mod other_images;
mod release;
mod rollout;
mod security;
mod stores;
mod validation;
