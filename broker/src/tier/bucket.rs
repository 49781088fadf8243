//! The bucket tiered segments go to: an S3 client (the AWS SDK over smithy's hyper client with
//! rustls) for one bucket and key prefix, with the few operations tiering needs.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Where tiered segments go (API.md "Tiering"). Credentials are the SDK's default chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierOptions {
    pub bucket: String,
    /// `None`: AWS S3 for the region.
    pub endpoint: Option<String>,
    /// `None`: from the default chain (`AWS_REGION`, the profile, the instance's metadata).
    pub region: Option<String>,
    /// Every key starts with this.
    pub prefix: String,
    pub path_style: bool,
    /// The local cache of tiered data, in bytes.
    pub cache_bytes: u64,
    /// Objects larger than this go up in parts of this size (multipart upload); at least
    /// [`MIN_PART_BYTES`], S3's smallest part but the last.
    pub part_bytes: u64,
}

/// S3's smallest part of a multipart upload (but the last).
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// The part size unless configured.
pub const DEFAULT_PART_BYTES: u64 = 16 << 20;
/// Parts of one multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A failed bucket operation, as text fit for logs, /metrics and /readyz (no credentials).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BucketError(pub String);

fn failed<E: std::error::Error>(what: &str, e: E) -> BucketError {
    // The SDK's Display is terse ("service error"); its source chain names the cause.
    let mut text = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    BucketError(text)
}

/// A failed GetObject.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// The object (or the bucket) does not exist, or ends before the range: 404 or 416.
    #[error("{0}")]
    Missing(BucketError),
    /// Anything else: the bucket did not answer, or answered another error.
    #[error("{0}")]
    Failed(BucketError),
}

/// An object a listing found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Unix seconds.
    pub modified_s: i64,
}

/// One bucket and key prefix; cheap to clone.
#[derive(Clone, Debug)]
pub struct Bucket {
    client: aws_sdk_s3::Client,
    pub options: TierOptions,
}

/// Each request gives up after this long; tiering retries on its own schedule.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Bucket {
    /// Builds the client: loads credentials and region from the default chain (no request to
    /// the bucket is made here, so a node starts while the bucket is unreachable).
    pub async fn new(options: TierOptions) -> Bucket {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http).timeout_config(timeouts);
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(options.path_style);
        if let Some(endpoint) = &options.endpoint {
            // S3-compatible services (GCS, Spaces, ...) do not all take the SDK's default
            // flexible checksums (aws-chunked trailers): send them only where an operation
            // requires one. Every object carries its own CRC32C (see `object`), checked on read.
            config = config
                .endpoint_url(endpoint)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Bucket { client: aws_sdk_s3::Client::from_conf(config.build()), options }
    }

    /// The full key of `name` (under the prefix).
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.options.prefix)
    }

    /// Whether the bucket answers with these credentials.
    pub async fn probe(&self) -> Result<(), BucketError> {
        self.client.head_bucket().bucket(&self.options.bucket).send().await.map_err(|e| failed("HeadBucket", e))?;
        Ok(())
    }

    /// Stores `body` under `key` (a full key): in one request, or in parts when it is larger
    /// than `part_bytes`. On AWS S3 itself each request carries a CRC32C checksum the server
    /// verifies.
    pub async fn put(&self, key: &str, body: impl Into<bytes::Bytes>) -> Result<(), BucketError> {
        let body = body.into();
        let part = usize::try_from(self.options.part_bytes.max(MIN_PART_BYTES)).unwrap_or(usize::MAX);
        if body.len() > part {
            return self.put_multipart(key, body, part).await;
        }
        let mut put = self.client.put_object().bucket(&self.options.bucket).key(key);
        if self.checksums() {
            put = put.checksum_algorithm(ChecksumAlgorithm::Crc32C);
        }
        let put = put.body(ByteStream::from(body)).customize();
        let put = if self.sign_payload() { put } else { put.disable_payload_signing() };
        put.send().await.map_err(|e| failed("PutObject", e))?;
        Ok(())
    }

    /// Checksums the SDK adds itself: on AWS S3 (see `new`).
    fn checksums(&self) -> bool {
        self.options.endpoint.is_none()
    }

    /// Whether uploads carry the SHA-256 of their body in the signature: only over plain
    /// `http://`, where nothing else protects the bytes on their way. Over TLS (AWS S3, GCS,
    /// Spaces, any `https://` endpoint) the connection already authenticates every byte, so
    /// the body goes up as `UNSIGNED-PAYLOAD`, which spares a SHA-256 pass over every byte on
    /// both sides (about 0.7 s of CPU per GiB here; docs/benchmarks.md).
    pub fn sign_payload(&self) -> bool {
        self.options.endpoint.as_deref().is_some_and(|e| e.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")))
    }

    async fn put_multipart(&self, key: &str, body: bytes::Bytes, part: usize) -> Result<(), BucketError> {
        let bucket = &self.options.bucket;
        let mut create = self.client.create_multipart_upload().bucket(bucket).key(key);
        if self.checksums() {
            create = create.checksum_algorithm(ChecksumAlgorithm::Crc32C);
        }
        let created = create.send().await.map_err(|e| failed("CreateMultipartUpload", e))?;
        let upload_id =
            created.upload_id().ok_or_else(|| BucketError("CreateMultipartUpload: no upload id".to_owned()))?;
        let uploaded = self.upload_parts(key, upload_id, body, part).await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map(drop)
                .map_err(|e| failed("CompleteMultipartUpload", e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Parts left behind cost storage until the bucket's lifecycle rule removes them.
            let aborted =
                self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await;
            if let Err(e) = aborted {
                tracing::warn!(error = %failed("AbortMultipartUpload", e), key, "a failed multipart upload was not aborted");
            }
        }
        completed
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: bytes::Bytes,
        part: usize,
    ) -> Result<Vec<CompletedPart>, BucketError> {
        use futures_util::{StreamExt, TryStreamExt};
        let count = body.len().div_ceil(part);
        let upload = |i: usize| {
            // A view of the body, not a copy.
            let chunk = body.slice(i * part..((i + 1) * part).min(body.len()));
            self.upload_part(key, upload_id, i, chunk)
        };
        // Parts in flight at once, as `aws s3 cp` does: one at a time leaves the link idle
        // between a part's last byte and the next request.
        futures_util::stream::iter(0..count).map(upload).buffered(PARTS_IN_FLIGHT).try_collect().await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        i: usize,
        chunk: bytes::Bytes,
    ) -> Result<CompletedPart, BucketError> {
        let number = i32::try_from(i + 1).map_err(|_| BucketError("more than 2^31 parts".to_owned()))?;
        let mut request =
            self.client.upload_part().bucket(&self.options.bucket).key(key).upload_id(upload_id).part_number(number);
        if self.checksums() {
            request = request.checksum_algorithm(ChecksumAlgorithm::Crc32C);
        }
        let request = request.body(ByteStream::from(chunk)).customize();
        let request = if self.sign_payload() { request } else { request.disable_payload_signing() };
        let out = request.send().await.map_err(|e| failed("UploadPart", e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_owned))
            .build())
    }

    /// Bytes `range` (`start..end`) of `key`.
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, BucketError> {
        self.read_range(key, range).await.map_err(|e| match e {
            GetError::Missing(e) | GetError::Failed(e) => e,
        })
    }

    /// Like [`get_range`](Self::get_range), telling a missing object (or bucket) apart.
    pub async fn read_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, GetError> {
        let header = format!("bytes={}-{}", range.start, range.end.saturating_sub(1));
        let out =
            self.client.get_object().bucket(&self.options.bucket).key(key).range(header).send().await.map_err(|e| {
                let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || e.raw_response().is_some_and(|r| matches!(r.status().as_u16(), 404 | 416));
                let e = failed("GetObject", e);
                if missing {
                    GetError::Missing(e)
                } else {
                    GetError::Failed(e)
                }
            })?;
        let bytes = out.body.collect().await.map_err(|e| GetError::Failed(failed("GetObject body", e)))?;
        Ok(bytes.to_vec())
    }

    pub async fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.client
            .delete_object()
            .bucket(&self.options.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("DeleteObject", e))?;
        Ok(())
    }

    /// Every key under `prefix` (a full key prefix), with its size and last-modified time
    /// (unix seconds).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, BucketError> {
        let mut keys = Vec::new();
        let mut pages =
            self.client.list_objects_v2().bucket(&self.options.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed("ListObjectsV2", e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    keys.push(Listed {
                        key: key.to_owned(),
                        size: object.size().map_or(0, |s| u64::try_from(s).unwrap_or(0)),
                        modified_s: object.last_modified().map_or(0, |t| t.secs()),
                    });
                }
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(endpoint: Option<&str>) -> TierOptions {
        TierOptions {
            bucket: "b".to_owned(),
            endpoint: endpoint.map(str::to_owned),
            region: Some("us-east-1".to_owned()),
            prefix: String::new(),
            path_style: true,
            cache_bytes: 0,
            part_bytes: DEFAULT_PART_BYTES,
        }
    }

    #[tokio::test]
    async fn only_plain_http_uploads_sign_their_payload() {
        for (endpoint, signed) in [
            (Some("http://127.0.0.1:9000"), true),
            (Some("HTTP://minio.internal"), true),
            (Some("https://storage.googleapis.com"), false),
            (Some("https://nyc3.digitaloceanspaces.com"), false),
            (None, false),
        ] {
            assert_eq!(Bucket::new(options(endpoint)).await.sign_payload(), signed, "{endpoint:?}");
        }
    }
}
