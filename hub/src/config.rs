//! The hub's configuration: where it listens, where it keeps data, which
//! certificates it uses, and every limit that protects it.
//!
//! The configuration comes from a TOML file (`deploy/hub.toml` is the
//! annotated example) and command-line flags, the flags winning. Every limit has
//! a default that suits a national hub on one machine, so an empty file is a
//! valid configuration once the TLS files and data directory are named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A required setting is absent from both the file and the flags.
    #[error("missing setting: {0} (give it in the config file or as a flag)")]
    Missing(&'static str),
    /// A setting has a value outside its range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// The smallest engine cache: below it every read of the hot path would go to disk.
const MIN_CACHE_BYTES: u64 = 1 << 20;

/// The whole configuration of a hub.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address to listen on, for example `127.0.0.1:7443`.
    pub listen: Option<SocketAddr>,
    /// The data directory (the store lives in `DIR/store`).
    pub data: Option<PathBuf>,
    /// The need-to-know policy file (see `deploy/policy.toml`); required.
    pub policy: Option<PathBuf>,
    /// The TLS files.
    #[serde(default)]
    pub tls: TlsFiles,
    /// The limits.
    #[serde(default)]
    pub limits: Limits,
    /// When the audit log is checkpointed.
    #[serde(default)]
    pub audit: crate::audit::CheckpointSettings,
    /// How often retention is swept (the periods are in the policy).
    #[serde(default)]
    pub retention: RetentionSchedule,
    /// Handover deadlines: public holidays and how often deadlines are checked.
    #[serde(default)]
    pub handover: HandoverSettings,
    /// The storage engine of a new store, and its cache.
    #[serde(default)]
    pub store: crate::store::engine::EngineSettings,
}

/// Handover deadlines. Keys under `[handover]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoverSettings {
    /// Public holidays (`YYYY-MM-DD`), which are not working days.
    pub holidays: Vec<String>,
    /// Milliseconds between deadline checks.
    pub deadline_sweep_ms: u64,
}

impl Default for HandoverSettings {
    fn default() -> Self {
        Self { holidays: Vec::new(), deadline_sweep_ms: 60_000 }
    }
}

impl HandoverSettings {
    /// The working-day calendar these settings describe.
    pub fn calendar(&self) -> Result<wire::handover::Calendar, ConfigError> {
        let holidays = self
            .holidays
            .iter()
            .map(|d| crate::clock::parse_date(d))
            .collect::<Result<_, _>>()
            .map_err(|message| ConfigError::Invalid { key: "handover.holidays", message })?;
        Ok(wire::handover::Calendar { holidays })
    }
}

/// When the hub sweeps retention; the periods themselves are in the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSchedule {
    /// Milliseconds between sweeps.
    pub sweep_every_ms: u64,
}

impl Default for RetentionSchedule {
    fn default() -> Self {
        Self { sweep_every_ms: 3_600_000 }
    }
}

/// The certificate files the hub loads, and how it keeps its CRLs current.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// The chain CA(s) whose client certificates are trusted, PEM.
    pub ca: Option<PathBuf>,
    /// The hub's certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// The hub's private key, PEM.
    pub key: Option<PathBuf>,
    /// Certificate revocation lists, PEM; optional. Read again on SIGHUP and
    /// every `crl_reload_seconds`.
    pub crl: Vec<PathBuf>,
    /// Seconds between rereads of the CRL files; 0 rereads them on SIGHUP only.
    pub crl_reload_seconds: u64,
    /// Whether a CRL past its `nextUpdate` still counts; by default the
    /// certificates it covers are refused, since their revocation status is unknown.
    pub allow_stale_crl: bool,
}

impl Default for TlsFiles {
    fn default() -> Self {
        Self { ca: None, cert: None, key: None, crl: Vec::new(), crl_reload_seconds: 300, allow_stale_crl: false }
    }
}

impl TlsFiles {
    /// The interval between CRL rereads, if there is one.
    pub fn crl_reload_every(&self) -> Option<Duration> {
        (self.crl_reload_seconds > 0 && !self.crl.is_empty()).then(|| Duration::from_secs(self.crl_reload_seconds))
    }
}

/// Every limit, with its default. Keys are the field names under `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket frame or message a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Time allowed for the TCP, TLS and WebSocket handshakes together.
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing, not even a pong, for this long is closed.
    /// The hub pings at a third of it.
    pub idle_timeout_ms: u64,
    /// Open connections allowed per identity (OIN + worker).
    pub max_connections_per_identity: usize,
    /// Open connections allowed in total.
    pub max_connections: usize,
    /// Sustained frames per second a connection may send.
    pub frames_per_second: u32,
    /// Frames a connection may send in a burst above the sustained rate.
    pub frames_burst: u32,
    /// Requests a connection may have in progress (awaiting durability) at once.
    pub max_inflight_per_connection: usize,
    /// Frames queued for a connection before the hub stops producing for it.
    pub outbound_queue_frames: usize,
    /// Bytes queued for (or reserved for replies to) one connection before the
    /// hub stops producing for it, and stops reading its requests.
    pub outbound_queue_bytes: usize,
    /// Bytes queued towards all connections together.
    pub outbound_total_bytes: usize,
    /// A client that does not take a frame within this time is disconnected.
    pub write_timeout_ms: u64,
    /// Bytes a closed connection still reads and drops, for at most 2 s, so
    /// that its close is not lost to a TCP reset.
    pub linger_bytes: usize,
    /// Consecutive malformed frames after which a connection is closed.
    pub max_protocol_errors: u32,
    /// Largest attachment blob, in bytes of ciphertext (100 MiB of content plus
    /// the encryption's overhead by default).
    pub max_blob_bytes: u64,
    /// Members a thread may have at once.
    pub max_members_per_thread: usize,
    /// Devices one identity may have: MLS leaves in one thread's group, and
    /// devices with their own delivery cursor at the hub.
    pub max_devices_per_identity: usize,
    /// Days after which a device that has not connected no longer holds
    /// retention back, and may be forgotten to make room for a new one.
    pub device_idle_days: u32,
    /// Threads one identity may create per UTC day.
    pub max_threads_per_identity_per_day: u32,
    /// Longest free text (reasons, justifications, purposes, legal basis codes),
    /// in bytes: it is kept for years in the audit log.
    pub max_text_bytes: usize,
    /// KeyPackage uploads one identity may make per minute (each is verified,
    /// which costs the hub far more than the upload costs the client).
    pub key_package_uploads_per_minute: u32,
    /// Offers one case may hold over its life (each stays in its ownership state).
    pub max_offers_per_case: usize,
    /// Earlier entries one history share may name.
    pub max_history_share_items: usize,
    /// Times one case may be closed over its life (each closing stays in its ownership state).
    pub max_closures_per_case: usize,
    /// The most side threads one case may have.
    pub max_side_threads_per_case: usize,
    /// The most clocks running at once on one case (plan evaluations add one each); as many stopped
    /// rappels, renewals and evaluations are kept, older ones forgotten.
    pub max_clocks_per_case: usize,
    /// The most case conferences one case holds over its life.
    pub max_conferences_per_case: usize,
    /// The most people one case conference invites.
    pub max_conference_invitees: usize,
    /// Attachment uploads a thread may have open (not yet sealed) at once.
    pub max_open_blobs_per_thread: usize,
    /// Bytes of all attachment blobs of one thread together.
    pub max_blob_bytes_per_thread: u64,
    /// Handshakes one source address may have in progress at once.
    pub max_handshakes_per_address: usize,
    /// Handshakes in progress at once in total (apart from open connections).
    pub max_pending_handshakes: usize,
    /// Refused handshakes of one address for one reason are recorded once per
    /// this interval, then as one entry with their count.
    pub refused_handshake_audit_ms: u64,
    /// Audit entries one query answers at most; more are read a page at a time (`after_seq`).
    pub max_audit_query_entries: usize,
    /// The smallest count a cell of the chain figures shows; smaller cells are suppressed, so that no
    /// family can be recognised from a small number.
    pub min_figure_count: u64,
    /// The most cases one privacy officer's request for the chain figures reads (each case's handover
    /// entries are read off the runtime); beyond it the request is `limit_exceeded`.
    pub max_figure_cases: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections_per_identity: 16,
            max_connections: 20_000,
            frames_per_second: 1_000,
            frames_burst: 2_000,
            max_inflight_per_connection: 256,
            outbound_queue_frames: 256,
            outbound_queue_bytes: 8 << 20,
            outbound_total_bytes: 256 << 20,
            write_timeout_ms: 10_000,
            linger_bytes: 16 << 20,
            max_protocol_errors: 16,
            max_blob_bytes: 101 << 20,
            max_members_per_thread: 64,
            max_devices_per_identity: 8,
            device_idle_days: 90,
            max_threads_per_identity_per_day: 500,
            max_text_bytes: 2_000,
            key_package_uploads_per_minute: 20,
            max_offers_per_case: 100,
            max_history_share_items: 256,
            max_closures_per_case: 20,
            max_side_threads_per_case: 16,
            max_clocks_per_case: 64,
            max_conferences_per_case: 20,
            max_conference_invitees: 12,
            max_open_blobs_per_thread: 16,
            max_blob_bytes_per_thread: 2 << 30,
            max_handshakes_per_address: 32,
            max_pending_handshakes: 1_024,
            refused_handshake_audit_ms: 10_000,
            max_audit_query_entries: 10_000,
            min_figure_count: wire::figures::DEFAULT_MIN_COUNT,
            max_figure_cases: 50_000,
        }
    }
}

impl Limits {
    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The bounds on an identity's devices.
    pub fn devices(&self) -> crate::devices::DeviceLimits {
        crate::devices::DeviceLimits { max: self.max_devices_per_identity, idle_days: self.device_idle_days }
    }

    /// The write timeout as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_frame_bytes", self.max_frame_bytes as u64),
            ("limits.handshake_timeout_ms", self.handshake_timeout_ms),
            ("limits.idle_timeout_ms", self.idle_timeout_ms),
            ("limits.max_connections_per_identity", self.max_connections_per_identity as u64),
            ("limits.max_connections", self.max_connections as u64),
            ("limits.frames_per_second", self.frames_per_second as u64),
            ("limits.max_inflight_per_connection", self.max_inflight_per_connection as u64),
            ("limits.outbound_queue_frames", self.outbound_queue_frames as u64),
            ("limits.outbound_queue_bytes", self.outbound_queue_bytes as u64),
            ("limits.outbound_total_bytes", self.outbound_total_bytes as u64),
            ("limits.write_timeout_ms", self.write_timeout_ms),
            ("limits.linger_bytes", self.linger_bytes as u64),
            ("limits.max_protocol_errors", self.max_protocol_errors as u64),
            ("limits.max_blob_bytes", self.max_blob_bytes),
            ("limits.max_members_per_thread", self.max_members_per_thread as u64),
            ("limits.max_devices_per_identity", self.max_devices_per_identity as u64),
            ("limits.device_idle_days", u64::from(self.device_idle_days)),
            ("limits.max_threads_per_identity_per_day", self.max_threads_per_identity_per_day as u64),
            ("limits.max_text_bytes", self.max_text_bytes as u64),
            ("limits.key_package_uploads_per_minute", self.key_package_uploads_per_minute as u64),
            ("limits.max_offers_per_case", self.max_offers_per_case as u64),
            ("limits.max_history_share_items", self.max_history_share_items as u64),
            ("limits.max_closures_per_case", self.max_closures_per_case as u64),
            ("limits.max_open_blobs_per_thread", self.max_open_blobs_per_thread as u64),
            ("limits.max_blob_bytes_per_thread", self.max_blob_bytes_per_thread),
            ("limits.max_handshakes_per_address", self.max_handshakes_per_address as u64),
            ("limits.max_pending_handshakes", self.max_pending_handshakes as u64),
            ("limits.refused_handshake_audit_ms", self.refused_handshake_audit_ms),
            ("limits.max_audit_query_entries", self.max_audit_query_entries as u64),
            ("limits.min_figure_count", self.min_figure_count),
            ("limits.max_figure_cases", self.max_figure_cases as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid { key, message: "must be greater than zero".into() });
        }
        if self.max_frame_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "limits.max_frame_bytes",
                message: "must be at least 1024".into(),
            });
        }
        // One identity's connections together may hold at most half the hub's outbound bytes.
        let one_identity = self.outbound_queue_bytes.saturating_mul(self.max_connections_per_identity);
        if one_identity > self.outbound_total_bytes / 2 {
            return Err(ConfigError::Invalid {
                key: "limits.outbound_total_bytes",
                message: "must be at least twice limits.outbound_queue_bytes × limits.max_connections_per_identity"
                    .into(),
            });
        }
        let largest = wire::max_hub_frame_bytes(self.max_frame_bytes as u64) as usize;
        if self.outbound_queue_bytes < 2 * largest {
            return Err(ConfigError::Invalid {
                key: "limits.outbound_queue_bytes",
                message: format!("must hold two of the largest hub frames ({largest} bytes each)"),
            });
        }
        // A close after a frame the hub stops reading (one over the limit, or the requests behind a
        // revocation) reaches the client only if the rest of that frame is drained first.
        if self.linger_bytes < self.max_frame_bytes {
            return Err(ConfigError::Invalid {
                key: "limits.linger_bytes",
                message: "must be at least limits.max_frame_bytes, or a close after the largest frame is lost to a \
                          TCP reset"
                    .into(),
            });
        }
        if self.frames_burst < self.frames_per_second {
            return Err(ConfigError::Invalid {
                key: "limits.frames_burst",
                message: "must be at least limits.frames_per_second".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// Checks that everything needed to serve is present and in range.
    pub fn validate(&self) -> Result<Resolved<'_>, ConfigError> {
        self.limits.validate()?;
        if self.store.cache_bytes < MIN_CACHE_BYTES {
            return Err(ConfigError::Invalid {
                key: "store.cache_bytes",
                message: format!("must be at least {MIN_CACHE_BYTES}"),
            });
        }
        Ok(Resolved {
            listen: self.listen.ok_or(ConfigError::Missing("listen"))?,
            data: self.data.as_deref().ok_or(ConfigError::Missing("data"))?,
            policy: self.policy.as_deref().ok_or(ConfigError::Missing("policy"))?,
            ca: self.tls.ca.as_deref().ok_or(ConfigError::Missing("tls.ca"))?,
            cert: self.tls.cert.as_deref().ok_or(ConfigError::Missing("tls.cert"))?,
            key: self.tls.key.as_deref().ok_or(ConfigError::Missing("tls.key"))?,
        })
    }
}

/// The required settings of a validated configuration.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory.
    pub data: &'a Path,
    /// The policy file.
    pub policy: &'a Path,
    /// The trusted CA file.
    pub ca: &'a Path,
    /// The hub certificate file.
    pub cert: &'a Path,
    /// The hub key file.
    pub key: &'a Path,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hub.toml");
        let config = Config::from_file(&path).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[limits]\nmax_frame_byts = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_frame_byts"), "{err}");
    }

    /// A configuration with every required setting and `limits` as given.
    fn with_limits(limits: &str) -> Config {
        let required =
            "listen = \"127.0.0.1:1\"\ndata = \"d\"\npolicy = \"p\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        toml::from_str(&format!("{required}[limits]\n{limits}")).unwrap()
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut config = with_limits("idle_timeout_ms = 0\n");
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "limits.idle_timeout_ms", .. })));
        config.limits.idle_timeout_ms = 1;
        config.validate().unwrap();
    }

    #[test]
    fn a_linger_shorter_than_the_largest_frame_is_refused() {
        let mut config = with_limits("max_frame_bytes = 2097152\nlinger_bytes = 2097151\n");
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "limits.linger_bytes", .. })));
        config.limits.linger_bytes = config.limits.max_frame_bytes;
        config.validate().unwrap();
    }

    #[test]
    fn the_store_engine_is_named_and_a_cache_too_small_is_refused() {
        let mut config = with_limits("");
        assert_eq!(config.store.engine, crate::store::engine::EngineKind::Fjall);
        config.store = toml::from_str("engine = \"sled\"\ncache_bytes = 1048575\n").unwrap();
        assert_eq!(config.store.engine, crate::store::engine::EngineKind::Sled);
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "store.cache_bytes", .. })));
        config.store.cache_bytes += 1;
        config.validate().unwrap();
        assert!(toml::from_str::<Config>("[store]\nengine = \"rocksdb\"\n").is_err());
    }

    #[test]
    fn missing_settings_are_named() {
        assert!(matches!(Config::default().validate(), Err(ConfigError::Missing("listen"))));
    }
}
