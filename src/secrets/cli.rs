//! `mailbake user …` and `mailbake dkim …`: manage the secrets of a site's store.
//!
//! The site file says *who* exists (users, DKIM selectors); the store holds their secrets.
//! These commands never edit the site file (it is the operator's, in git): when it needs a
//! change they print exactly what to add.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{SecretStore, read_password_from, read_password_twice_from_tty};
use crate::site::{self, DkimAlgorithm, DomainName, LoadedSite, LocalPart, MailAddress, Selector};

/// Where the secrets of `site` live: `--secrets` or `secrets/` beside the site file.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The site file (YAML).
    pub site: PathBuf,
    /// Secrets store [default: secrets/ beside the site file].
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,
}

impl StoreArgs {
    fn store_path(&self) -> PathBuf {
        self.secrets
            .clone()
            .unwrap_or_else(|| SecretStore::default_path(&self.site))
    }

    /// Opens the store, creating it (0700) when it does not exist yet.
    fn open_or_create(&self) -> anyhow::Result<SecretStore> {
        let path = self.store_path();
        Ok(if path.exists() {
            SecretStore::open(&path)?
        } else {
            SecretStore::create(&path)?
        })
    }

    fn open(&self) -> anyhow::Result<SecretStore> {
        Ok(SecretStore::open(self.store_path())?)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Store a password hash for a user the site file lists (prompts twice for the password).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The user's address, e.g. i@example.com.
        address: String,
        /// Read the password from standard input (one line) instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user's password hash from the store.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        address: String,
    },
    /// List the site's users and whether the store has a password for each.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DkimCommand {
    /// Generate the keys of a domain's DKIM selectors that have none yet.
    Keygen {
        #[command(flatten)]
        store: StoreArgs,
        /// The mail domain.
        domain: String,
        /// Replace existing keys (breaks verification of mail signed with the old ones).
        #[arg(long)]
        force: bool,
    },
    /// Start a rotation: make keys for new selectors named `<PREFIX>-…` with the same
    /// algorithms, and print the site-file change that makes them sign while the old ones stay
    /// published.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
        /// The mail domain.
        domain: String,
        /// Prefix of the new selectors, e.g. 2026b (gives 2026b-rsa, 2026b-ed).
        #[arg(long, value_name = "PREFIX")]
        to: String,
    },
}

fn load(store: &StoreArgs) -> anyhow::Result<LoadedSite> {
    Ok(site::load(&store.site)?)
}

/// Parses a mail address given on the command line into the site's typed names, with the
/// messages the site file gets for the same mistakes.
fn parse_address(address: &str) -> anyhow::Result<(DomainName, LocalPart)> {
    let address = MailAddress::try_from(address).map_err(|e| anyhow::anyhow!("{e}"))?;
    let domain = DomainName::try_from(address.domain()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let local = LocalPart::try_from(address.local_part()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((domain, local))
}

/// Parses `address` and checks the site lists it as a user.
fn site_user(loaded: &LoadedSite, address: &str) -> anyhow::Result<(DomainName, LocalPart)> {
    let parsed = MailAddress::try_from(address).map_err(|e| anyhow::anyhow!("{e}"))?;
    let domain = DomainName::try_from(parsed.domain()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let local = parsed.local_part();
    let Some(d) = loaded.site.domains.get(&domain) else {
        bail!(
            "{} is not a domain of {}; add it under `domains:` first",
            domain,
            loaded.path.display()
        );
    };
    let Some(user) = d.users.iter().find(|u| u.as_str() == local) else {
        bail!(
            "{local}@{domain} is not a user in {}; add `{local}` to `domains.{domain}.users` first (the site file says who exists, the store keeps their passwords)",
            loaded.path.display()
        );
    };
    Ok((domain, user.clone()))
}

pub fn run_user(command: &UserCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            store,
            address,
            password_stdin,
        } => {
            let loaded = load(store)?;
            let (domain, local) = site_user(&loaded, address)?;
            let secrets = store.open_or_create()?;
            let password = if *password_stdin {
                read_password_from(std::io::stdin().lock())?
            } else {
                read_password_twice_from_tty(&format!("{local}@{domain}"))?
            };
            secrets.add_user(&domain, &local, &password)?;
            writeln!(
                out,
                "stored a password hash for {local}@{domain} in {}",
                secrets.root().display()
            )?;
        }
        UserCommand::Remove { store, address } => {
            let (domain, local) = parse_address(address)?;
            let secrets = store.open()?;
            secrets.remove_user(&domain, &local)?;
            writeln!(
                out,
                "removed {local}@{domain} from {}",
                secrets.root().display()
            )?;
        }
        UserCommand::List { store } => {
            let loaded = load(store)?;
            let secrets = store.open()?;
            for (domain, d) in loaded.site.domains.iter() {
                let stored = secrets.list_users(domain)?;
                for user in &d.users {
                    let state = if stored.iter().any(|s| s == user.as_str()) {
                        "ok"
                    } else {
                        "no password: run `mailbake user add`"
                    };
                    writeln!(out, "{user}@{domain}\t{state}")?;
                }
                for extra in stored
                    .iter()
                    .filter(|s| !d.users.iter().any(|u| u.as_str() == s.as_str()))
                {
                    writeln!(
                        out,
                        "{extra}@{domain}\tin the store but not in the site file: `mailbake user remove`"
                    )?;
                }
            }
        }
    }
    Ok(())
}

pub fn run_dkim(command: &DkimCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        DkimCommand::Keygen {
            store,
            domain,
            force,
        } => keygen(store, domain, *force, out),
        DkimCommand::Rotate { store, domain, to } => rotate(store, domain, to, out),
    }
}

/// `mailbake dkim keygen`: a key for every selector of `domain` that has none (or all, with
/// `force`).
fn keygen(store: &StoreArgs, domain: &str, force: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let loaded = load(store)?;
    let (domain, d) = site_domain(&loaded, domain)?;
    require_selectors(&loaded, &domain, d, "")?;
    let secrets = store.open_or_create()?;
    for (selector, algorithm) in d.dkim.selectors.iter() {
        let exists = secrets
            .list_dkim_selectors(&domain)?
            .iter()
            .any(|s| s == selector.as_str());
        if exists && !force {
            writeln!(out, "{selector}._domainkey.{domain}: key exists, kept")?;
            continue;
        }
        secrets.dkim_keygen(&domain, selector, *algorithm, force)?;
        writeln!(
            out,
            "{selector}._domainkey.{domain}: generated {algorithm} key"
        )?;
    }
    let secrets_arg = store
        .secrets
        .as_ref()
        .map(|dir| format!(" --secrets {}", dir.display()))
        .unwrap_or_default();
    writeln!(
        out,
        "publish the records printed by `mailbake dns {}{secrets_arg}`",
        store.site.display()
    )?;
    Ok(())
}

/// `mailbake dkim rotate`: keys for new selectors `<to>-rsa`/`<to>-ed`, and the site change
/// that makes them sign while the old ones stay published.
fn rotate(store: &StoreArgs, domain: &str, to: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let loaded = load(store)?;
    let (domain, d) = site_domain(&loaded, domain)?;
    // Nothing signs yet, so there is nothing to rotate away from.
    require_selectors(
        &loaded,
        &domain,
        d,
        " and generate their keys with `mailbake dkim keygen`; rotation replaces selectors that already sign",
    )?;
    let secrets = store.open_or_create()?;
    let mut new = Vec::new();
    for (selector, algorithm) in d.dkim.selectors.iter() {
        let suffix = match algorithm {
            DkimAlgorithm::Ed25519 => "ed",
            _ => "rsa",
        };
        let name = Selector::try_from(format!("{to}-{suffix}"))
            .map_err(|e| anyhow::anyhow!("--to {to}: {e}"))?;
        if d.dkim
            .selectors
            .keys()
            .chain(d.dkim.retired.keys())
            .any(|s| *s == name)
        {
            bail!("selector {name} is already in the site file; pick another --to prefix");
        }
        secrets
            .dkim_keygen(&domain, &name, *algorithm, false)
            .with_context(|| format!("generating the key for {name} (replacing {selector})"))?;
        new.push((name, *algorithm));
    }
    writeln!(
        out,
        "generated keys for the new selectors; now change {} to:",
        loaded.path.display()
    )?;
    writeln!(out, "    dkim:\n      selectors:")?;
    for (name, algorithm) in &new {
        writeln!(out, "        {name}: {algorithm}")?;
    }
    writeln!(out, "      retired:")?;
    for (name, algorithm) in d.dkim.selectors.iter().chain(d.dkim.retired.iter()) {
        writeln!(out, "        {name}: {algorithm}")?;
    }
    writeln!(
        out,
        "publish the new records (`mailbake dns`), wait for DNS, rebuild and reseed; remove the retired selectors a few days later"
    )?;
    Ok(())
}

/// Fails when `domain` has no signing selectors in the site file, saying how to add some
/// (and `then`, what to do next).
fn require_selectors(
    loaded: &LoadedSite,
    domain: &DomainName,
    d: &site::Domain,
    then: &str,
) -> anyhow::Result<()> {
    if d.dkim.selectors.is_empty() {
        bail!(
            "{domain} has no DKIM selectors in {}; add `dkim: {{ selectors: {{ 2026a-rsa: rsa-2048, 2026a-ed: ed25519 }} }}` under `domains.{domain}`{then}",
            loaded.path.display()
        );
    }
    Ok(())
}

fn site_domain<'a>(
    loaded: &'a LoadedSite,
    domain: &str,
) -> anyhow::Result<(DomainName, &'a site::Domain)> {
    let name = DomainName::try_from(domain).map_err(|e| anyhow::anyhow!("{e}"))?;
    let d = loaded.site.domains.get(&name).with_context(|| {
        format!(
            "{name} is not a domain of {}",
            Path::new(&loaded.path).display()
        )
    })?;
    Ok((name, d))
}
