//! The live path: DNS through hickory (only the server `--resolver` names, else the system's
//! resolvers; never `/etc/hosts`), and TCP connections dialled directly, each bounded in time.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType as HickoryType};
use tokio::net::TcpStream;

use super::dns::{Answer, LookupError, Record, RecordType, Resolver};
use super::net::Dialer;
use super::spf_eval::{self, RecordingCache, SpfEvaluation};

/// mox's bounds: 10 s to dial or to get one answer, 30 s for a whole check.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long hickory waits for one server's answer (one try): inside [`LOOKUP_TIMEOUT`].
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the live resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    #[error(
        "cannot read the system's resolver configuration (/etc/resolv.conf): {0}\n  fix: pass --resolver ADDR[:PORT]"
    )]
    SystemConfig(String),
    #[error("cannot start the DNS resolver: {0}")]
    Build(String),
}

pub struct LiveResolver {
    resolver: TokioResolver,
    /// mail-auth's authenticator for SPF evaluation, over the same resolver.
    spf: MessageAuthenticator,
    label: String,
}

impl LiveResolver {
    /// A resolver asking only `server` (UDP, then TCP for long answers), or the system's
    /// resolvers when `server` is `None`.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, ResolverSetupError> {
        let (config, mut opts, label) = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                (
                    ResolverConfig::from_name_servers(vec![ns]),
                    ResolverOpts::default(),
                    format!("{addr} (--resolver)"),
                )
            }
            None => {
                let (config, opts) =
                    mail_auth::hickory_resolver::system_conf::read_system_conf()
                        .map_err(|e| ResolverSetupError::SystemConfig(e.to_string()))?;
                let servers: Vec<String> = config
                    .name_servers()
                    .iter()
                    .map(|ns| ns.ip.to_string())
                    .collect();
                let label = format!("the system resolvers ({})", servers.join(", "));
                (config, opts, label)
            }
        };
        // Public DNS is what receivers see: no hosts file, one bounded try per server.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = SERVER_TIMEOUT;
        opts.attempts = 1;
        opts.edns0 = true;
        opts.cache_size = 256;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolverSetupError::Build(e.to_string()))?;
        // The same resolver (clones share it): SPF's lookups go where every other one goes.
        let spf = MessageAuthenticator(resolver.clone());
        Ok(LiveResolver {
            resolver,
            spf,
            label,
        })
    }

    async fn ask(&self, name: &str, rtype: RecordType) -> Answer {
        let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|e| LookupError::Failed(format!("`{name}` is not a DNS name: {e}")))?;
        let kind = match rtype {
            RecordType::A => HickoryType::A,
            RecordType::Aaaa => HickoryType::AAAA,
            RecordType::Mx => HickoryType::MX,
            RecordType::Txt => HickoryType::TXT,
            RecordType::Ptr => HickoryType::PTR,
        };
        let lookup =
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.lookup(fqdn, kind)).await {
                Err(_) => return Err(LookupError::Timeout(LOOKUP_TIMEOUT)),
                Ok(Err(e)) => return classify(e),
                Ok(Ok(lookup)) => lookup,
            };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| convert(&r.data))
            .filter(|r| r.record_type() == rtype)
            .collect())
    }
}

fn name_text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn convert(data: &RData) -> Option<Record> {
    Some(match data {
        RData::A(a) => Record::A(a.0),
        RData::AAAA(a) => Record::Aaaa(a.0),
        RData::MX(mx) => Record::Mx {
            preference: mx.preference,
            exchange: name_text(&mx.exchange),
        },
        RData::TXT(txt) => Record::Txt(
            txt.txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect(),
        ),
        RData::PTR(ptr) => Record::Ptr(name_text(&ptr.0)),
        _ => return None,
    })
}

/// NXDOMAIN is an answer; an existing name without the type is an empty answer; the rest
/// (SERVFAIL, REFUSED, no reply) is a failure to get one.
fn classify(error: NetError) -> Answer {
    match &error {
        NetError::Dns(DnsError::NoRecordsFound(none)) => {
            if none.response_code == ResponseCode::NXDomain {
                Err(LookupError::NxDomain)
            } else {
                Ok(Vec::new())
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => {
            Err(LookupError::Failed(format!("the server answered {code}")))
        }
        NetError::Timeout => Err(LookupError::Timeout(SERVER_TIMEOUT)),
        _ => Err(LookupError::Failed(error.to_string())),
    }
}

impl Resolver for LiveResolver {
    fn lookup(&self, name: &str, rtype: RecordType) -> impl Future<Output = Answer> + Send {
        self.ask(name, rtype)
    }

    fn check_spf(&self, ip: IpAddr, domain: &str) -> impl Future<Output = SpfEvaluation> + Send {
        let domain = domain.to_string();
        async move {
            let cache = RecordingCache::default();
            let result = spf_eval::check_with(&self.spf, &cache, ip, &domain).await;
            SpfEvaluation {
                result,
                lookups: cache.take(),
            }
        }
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// Dials the address it is given, nothing else.
pub struct DirectDialer;

impl Dialer for DirectDialer {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", DIAL_TIMEOUT.as_secs()),
            )),
        }
    }
}
