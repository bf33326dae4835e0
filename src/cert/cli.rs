//! The `mailbake cert` command: per host, decide from the store alone whether anything must
//! happen; only then fetch the pinned lego and ask the CA, one host at a time, committing
//! each host's new state as soon as it checks out (a later host's failure never costs an
//! earlier host's issuance).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    Action, CertError, Freshness, LegoRunFailed, PinnedLego, RENEW_DAYS, Request,
    StoredCertificate, assess, env_file, lego::tail, unix_now,
};
use crate::fetch::Cache;
use crate::secrets::{self, ACME_ENV, LegoAccount, LegoCertificate, SecretStore};
use crate::site::{self, Acme, Host, HostName, LoadedSite};
use crate::template::SiteContext;

/// lego's DNS providers wait for propagation with their own timeouts (minutes at most); this
/// only bounds a lego that hangs.
const LEGO_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(clap::Args, Debug)]
pub struct CertArgs {
    /// The site file (YAML).
    pub site: PathBuf,
    /// Only this host [default: every host of the site].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Secrets store holding acme.env and lego's state [default: secrets/ beside the site file].
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,
    /// Lock file pinning lego [default: the packages.lock built into mailbake].
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Package cache [default: $MAILBAKE_CACHE, else $XDG_CACHE_HOME/mailbake, else ~/.cache/mailbake].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// What every host's request shares.
struct Job<'a> {
    loaded: &'a LoadedSite,
    acme: &'a Acme,
    store: SecretStore,
    env: Vec<(String, String)>,
    account: LegoAccount,
    ca_bundle: String,
    resolvers: Vec<String>,
}

/// One host and what it needs.
struct Plan<'a> {
    name: &'a HostName,
    host: &'a Host,
    names: Vec<String>,
    stored: Option<StoredCertificate>,
    freshness: Freshness,
}

pub fn run(args: &CertArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let loaded = site::load(&args.site)?;
    let job = Job::prepare(&loaded, args.secrets.as_deref())?;
    let plans = job.plan(args.host.as_deref())?;
    let mut todo = Vec::new();
    for plan in plans {
        let who = format!("{} ({})", plan.name, plan.host.fqdn);
        match (&plan.freshness, &plan.stored) {
            (Freshness::Valid { days_left }, Some(c)) => {
                let _ = writeln!(
                    out,
                    "{who}: stored certificate valid until {} ({days_left} days left; renewed within {RENEW_DAYS}): nothing to do",
                    c.not_after_text
                );
            }
            (Freshness::Renew { days_left }, _) => {
                let _ = writeln!(out, "{who}: {days_left} days left: renewing");
                todo.push(plan);
            }
            (Freshness::Obtain { reason }, _) => {
                let _ = writeln!(out, "{who}: {reason}: obtaining a certificate");
                todo.push(plan);
            }
            (Freshness::Valid { .. }, None) => unreachable!("a valid certificate is stored"),
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    // The lock `build` uses (built in unless --lock), so lego here is the overlay's lego.
    let lock = crate::shipped::lock(args.lock.as_deref())?;
    let lock_path = args
        .lock
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::shipped::BUILT_IN).join("packages.lock"));
    let cache = match &args.cache {
        Some(dir) => Cache::open(dir)?,
        None => Cache::open_default()?,
    };
    let lego_dir = job.store.lego_dir()?;
    let lego = PinnedLego::unpack(&lock, &lock_path, &cache, lego_dir, &mut std::io::stderr())?;
    let total = todo.len();
    let mut failed = 0;
    for plan in &todo {
        match job.issue(&lego, plan) {
            Ok(line) => {
                let _ = writeln!(out, "{} ({}): {line}", plan.name, plan.host.fqdn);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(CertError::SomeFailed { failed, total }.into());
    }
    Ok(())
}

impl<'a> Job<'a> {
    /// Checks everything the requests need before any of them is made.
    fn prepare(loaded: &'a LoadedSite, secrets_dir: Option<&Path>) -> anyhow::Result<Job<'a>> {
        let acme = loaded
            .site
            .tls
            .acme
            .as_ref()
            .ok_or_else(|| CertError::NoAcme {
                site: loaded.path.clone(),
            })?;
        let secrets_dir = secrets_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| SecretStore::default_path(&loaded.path));
        // A site with tls.acme always needs a store, so `None` cannot happen here.
        let store = secrets::open_for_site(loaded, &secrets_dir)?.ok_or_else(|| {
            CertError::MissingAcmeEnv {
                site: loaded.path.clone(),
                path: secrets_dir.join(ACME_ENV),
            }
        })?;
        let env_path = store.root().join(ACME_ENV);
        let env_bytes = store
            .read_secret(ACME_ENV)?
            .ok_or_else(|| CertError::MissingAcmeEnv {
                site: loaded.path.clone(),
                path: env_path.clone(),
            })?;
        let env = env_file::parse(&env_bytes, &env_path).map_err(CertError::from)?;
        let context = SiteContext::for_site(loaded)?;
        let account = LegoAccount::new(&acme.directory.0, acme.email.as_str())?;
        Ok(Job {
            loaded,
            acme,
            store,
            env,
            account,
            ca_bundle: context.acme.map(|a| a.ca_bundle).unwrap_or_default(),
            resolvers: acme.resolvers.iter().map(ToString::to_string).collect(),
        })
    }

    /// Every selected host with what it needs, decided from the store and the clock alone.
    fn plan(&self, only: Option<&str>) -> anyhow::Result<Vec<Plan<'a>>> {
        let site = &self.loaded.site;
        if let Some(only) = only {
            site::find_host(self.loaded, only).map_err(CertError::from)?;
        }
        let has_account = self
            .store
            .read_acme(&self.account.registration())?
            .is_some()
            && self.store.read_acme(&self.account.key())?.is_some();
        let now = unix_now();
        let mut plans = Vec::new();
        for (name, host) in site.hosts.iter() {
            if only.is_some_and(|o| o != name.as_str()) {
                continue;
            }
            let names = crate::site::certificate_host_names(site, &host.fqdn);
            let parsed = self
                .store
                .read_acme(&LegoCertificate::of(&host.fqdn).chain)?
                .map(|pem| StoredCertificate::parse(&pem));
            let freshness = assess(parsed.as_ref(), has_account, &names, now, RENEW_DAYS);
            plans.push(Plan {
                name,
                host,
                names,
                stored: parsed.and_then(Result::ok),
                freshness,
            });
        }
        Ok(plans)
    }

    /// Runs lego for one host on a copy of the stored state and commits it once the new
    /// certificate checks out; returns the line to print.
    fn issue(&self, lego: &PinnedLego, plan: &Plan) -> Result<String, CertError> {
        let update = self.store.begin_acme_update()?;
        let action = match plan.freshness {
            Freshness::Renew { .. } => Action::Renew { days: RENEW_DAYS },
            _ => Action::Run,
        };
        let ca_file = self.ca_file(lego)?;
        let request = Request {
            state: update.path(),
            server: &self.acme.directory.0,
            email: self.acme.email.as_str(),
            provider: &self.acme.provider.0,
            key_type: self.acme.key_type.as_lego(),
            resolvers: &self.resolvers,
            names: &plan.names,
            env: &self.env,
            ca_file: ca_file.as_deref(),
        };
        let action_name = match action {
            Action::Run => "run",
            Action::Renew { .. } => "renew",
        };
        let output = lego.run(&request, action, LEGO_LIMIT).map_err(|failed| {
            CertError::Lego(Box::new(LegoRunFailed {
                host: plan.name.to_string(),
                fqdn: plan.host.fqdn.to_string(),
                action: action_name,
                status: failed.status.clone(),
                server: self.acme.directory.to_string(),
                kept: kept(plan.stored.as_ref()),
                said: indent(&failed.tail(15)),
            }))
        })?;
        let cert = self.check_result(update.path(), plan, &output)?;
        update.commit()?;
        let verb = if action == Action::Run {
            "obtained"
        } else {
            "renewed"
        };
        Ok(format!(
            "{verb}: serial {}, valid until {}, names {}",
            cert.serial,
            cert.not_after_text,
            plan.names.join(", ")
        ))
    }

    /// The new state must hold the account and a new certificate for exactly the host's
    /// names, with its key: what the seed will carry.
    fn check_result(
        &self,
        state: &Path,
        plan: &Plan,
        output: &str,
    ) -> Result<StoredCertificate, CertError> {
        let files = LegoCertificate::of(&plan.host.fqdn);
        let missing = |what: String| CertError::LegoResult {
            host: plan.name.to_string(),
            fqdn: plan.host.fqdn.to_string(),
            what,
            path: state.to_path_buf(),
            said: indent(&tail(output, 15)),
        };
        for rel in [
            self.account.registration(),
            self.account.key(),
            files.key.clone(),
        ] {
            if !state.join(&rel).is_file() {
                return Err(missing(rel));
            }
        }
        let chain =
            std::fs::read(state.join(&files.chain)).map_err(|_| missing(files.chain.clone()))?;
        let cert = StoredCertificate::parse(&chain)
            .map_err(|e| missing(format!("a readable certificate ({e})")))?;
        if !cert.names_match(&plan.names) {
            return Err(missing(format!(
                "a certificate for {}",
                plan.names.join(", ")
            )));
        }
        if plan
            .stored
            .as_ref()
            .is_some_and(|old| old.serial == cert.serial)
        {
            return Err(missing(
                "a new certificate (the old one is still there)".into(),
            ));
        }
        Ok(cert)
    }

    /// The site's extra CA bundle (`tls.acme.ca_certificates`) as a file for lego.
    fn ca_file(&self, lego: &PinnedLego) -> Result<Option<PathBuf>, CertError> {
        if self.ca_bundle.is_empty() {
            return Ok(None);
        }
        let path = lego.scratch("acme-ca.pem");
        std::fs::write(&path, &self.ca_bundle).map_err(|e| CertError::io("write", &path, e))?;
        Ok(Some(path))
    }
}

fn kept(stored: Option<&StoredCertificate>) -> String {
    match stored {
        Some(c) => format!(
            "the stored certificate (serial {}, valid until {}) stays in the store",
            c.serial, c.not_after_text
        ),
        None => "the store is unchanged".into(),
    }
}

/// lego's last lines, indented under the error. They carry the CA's and the DNS provider's
/// own words, so each line is escaped: nothing they send acts on the terminal.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {}", crate::outside::line(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::indent;

    #[test]
    fn legos_words_are_indented_and_escaped() {
        let said = indent("2026/01/01 error: \x1b]0;owned\x07acme: \x1b[2J\rALL ISSUED\nnext");
        assert_eq!(
            said,
            "    2026/01/01 error: \\u{1b}]0;owned\\u{7}acme: \\u{1b}[2J\\u{d}ALL ISSUED\n    next"
        );
    }
}
