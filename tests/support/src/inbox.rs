//! A receiving MTA standing in for Gmail: plain SMTP (no STARTTLS, no AUTH offered), a thread per
//! connection, every accepted message recorded with its envelope and raw bytes so the test can
//! check what the mail server under test really delivered (headers, DKIM signature, rewritten
//! sender). Standard library only; deliberately small and strict about bounds so a misbehaving
//! peer fails the test instead of hanging it.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Limits and identity of an [`Inbox`].
#[derive(Debug, Clone)]
pub struct InboxOptions {
    /// Name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Larger messages are refused with 552 (and not recorded).
    pub max_message_bytes: usize,
    /// Concurrent connections; one more is greeted with 421 and closed.
    pub max_connections: usize,
    /// Longest command line; longer ones get 500 and the connection is closed.
    pub max_line_bytes: usize,
    /// A connection idle this long is closed (421), so a stuck client cannot hold a thread.
    pub idle_timeout: Duration,
    /// Accept recipients only in these domains (550 5.7.1 otherwise, like an MTA refusing to
    /// relay); every recipient when empty.
    pub accept_domains: Vec<String>,
}

impl Default for InboxOptions {
    fn default() -> InboxOptions {
        InboxOptions {
            hostname: "mx.inbox.test".into(),
            max_message_bytes: 10 * 1024 * 1024,
            max_connections: 32,
            max_line_bytes: 4096,
            idle_timeout: Duration::from_secs(60),
            accept_domains: Vec::new(),
        }
    }
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Client address as seen by the host (`127.0.0.1:…` for a guest behind QEMU's user net).
    pub peer: SocketAddr,
    /// The EHLO/HELO argument.
    pub helo: String,
    /// Whether the client greeted with EHLO (rather than HELO).
    pub esmtp: bool,
    /// Reverse path without the angle brackets (empty for a bounce).
    pub mail_from: String,
    /// Forward paths without the angle brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA, dot-unstuffed, without the final `.` line; line endings
    /// as the client sent them (CRLF for a conforming client).
    pub data: Vec<u8>,
}

impl Message {
    /// `data` as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Unfolded values of every header field named `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.data, name)
    }

    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }
}

/// Unfolded values of every header field named `name` (case-insensitive) of the message
/// `data`, in order.
pub fn header_values(data: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let head = match text.find("\r\n\r\n").or_else(|| text.find("\n\n")) {
        Some(end) => &text[..end],
        None => &text[..],
    };
    let mut fields: Vec<String> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .iter()
        .filter_map(|f| {
            let (n, v) = f.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .collect()
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "from {} (helo {}): MAIL FROM:<{}> RCPT TO:{:?}, {} bytes, Subject: {}",
            self.peer,
            self.helo,
            self.mail_from,
            self.rcpt_to,
            self.data.len(),
            self.header("Subject").unwrap_or_default()
        )
    }
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<Message>>,
    arrived: Condvar,
    /// Session transcript (client lines prefixed `C:`, server `S:`), for failure messages.
    log: Mutex<Vec<String>>,
    /// Open connections by id, so Drop can shut them down and their threads end.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not hide what was recorded.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn note(&self, line: String) {
        let mut log = lock(&self.log);
        // Bounded: a flood of commands must not eat the host's memory.
        if log.len() < 10_000 {
            log.push(line);
        }
    }
}

/// A running receiving MTA; dropping it stops accepting, closes open connections and joins the
/// threads.
pub struct Inbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Inbox {
    /// Listens on `addr` (`127.0.0.1:25` for a guest; port 0 picks a free one) with defaults.
    pub fn start(addr: SocketAddr) -> Result<Inbox, String> {
        Inbox::start_with(addr, InboxOptions::default())
    }

    pub fn start_with(addr: SocketAddr, opts: InboxOptions) -> Result<Inbox, String> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            format!("Inbox: cannot listen on {addr} ({e}); is another MTA on it? `ss -lntp` shows")
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("Inbox: local address: {e}"))?;
        // Non-blocking accept polled with the stop flag: Drop then needs no self-connection.
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("Inbox: non-blocking listener: {e}"))?;
        let shared = Arc::new(Shared::default());
        let workers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let opts = Arc::new(opts);
        let acceptor = {
            let shared = Arc::clone(&shared);
            let workers = Arc::clone(&workers);
            thread::Builder::new()
                .name("inbox-accept".into())
                .spawn(move || accept_loop(&listener, &shared, &workers, &opts))
                .map_err(|e| format!("Inbox: cannot start the accept thread: {e}"))?
        };
        Ok(Inbox {
            addr,
            shared,
            acceptor: Some(acceptor),
            workers,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Message> {
        lock(&self.shared.messages).clone()
    }

    /// The SMTP transcript so far (`C:`/`S:` lines with a connection number).
    pub fn transcript(&self) -> String {
        lock(&self.shared.log).join("\n")
    }

    /// Waits until a message satisfying `pred` has arrived (also one that arrived before the
    /// call) and returns it; on timeout the error lists what did arrive and the transcript.
    pub fn wait_for(
        &self,
        pred: impl Fn(&Message) -> bool,
        timeout: Duration,
    ) -> Result<Message, String> {
        let deadline = Instant::now() + timeout;
        let mut msgs = lock(&self.shared.messages);
        loop {
            if let Some(m) = msgs.iter().find(|m| pred(m)) {
                return Ok(m.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                let arrived = if msgs.is_empty() {
                    "nothing arrived".to_string()
                } else {
                    msgs.iter()
                        .enumerate()
                        .map(|(i, m)| format!("  #{i} {m}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                drop(msgs);
                return Err(format!(
                    "Inbox {}: no matching message within {timeout:?}; {} arrived:\n{arrived}\n\
                     --- SMTP transcript ---\n{}",
                    self.addr,
                    self.messages().len(),
                    self.transcript()
                ));
            }
            msgs = self
                .shared
                .arrived
                .wait_timeout(msgs, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for (_, s) in lock(&self.shared.conns).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let workers: Vec<_> = lock(&self.workers).drain(..).collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    workers: &Arc<Mutex<Vec<JoinHandle<()>>>>,
    opts: &Arc<InboxOptions>,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                shared.note(format!("accept failed: {e}"));
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        // Accepted sockets may inherit non-blocking mode on some platforms; sessions block
        // with a read timeout instead.
        if stream.set_nonblocking(false).is_err()
            || stream.set_read_timeout(Some(opts.idle_timeout)).is_err()
        {
            continue;
        }
        let mut conns = lock(&shared.conns);
        if conns.len() >= opts.max_connections {
            drop(conns);
            let mut s = stream;
            let _ = s.write_all(b"421 4.3.2 too many connections, try later\r\n");
            shared.note(format!("[{id}] {peer}: refused, too many connections"));
            continue;
        }
        match stream.try_clone() {
            Ok(c) => conns.insert(id, c),
            Err(_) => continue,
        };
        drop(conns);
        let (shared2, opts2) = (Arc::clone(shared), Arc::clone(opts));
        let spawned = thread::Builder::new()
            .name(format!("inbox-conn-{id}"))
            .spawn(move || {
                let mut s = Session::new(id, peer, &shared2, &opts2);
                if let Err(e) = s.run(stream) {
                    shared2.note(format!("[{id}] connection ended: {e}"));
                }
                lock(&shared2.conns).remove(&id);
            });
        match spawned {
            Ok(h) => {
                let mut w = lock(workers);
                // Reap finished threads so the list stays as long as the open connections.
                w.retain(|h| !h.is_finished());
                w.push(h);
            }
            Err(e) => {
                shared.note(format!("[{id}] cannot start a thread: {e}"));
                lock(&shared.conns).remove(&id);
            }
        }
    }
}

struct Session<'a> {
    id: u64,
    peer: SocketAddr,
    shared: &'a Shared,
    opts: &'a InboxOptions,
    helo: Option<(String, bool)>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

enum Line {
    Ok(Vec<u8>),
    TooLong,
    Eof,
}

impl<'a> Session<'a> {
    fn new(id: u64, peer: SocketAddr, shared: &'a Shared, opts: &'a InboxOptions) -> Self {
        Session {
            id,
            peer,
            shared,
            opts,
            helo: None,
            mail_from: None,
            rcpt_to: Vec::new(),
        }
    }

    fn reply(&self, w: &mut impl Write, text: &str) -> io::Result<()> {
        self.shared.note(format!(
            "[{}] S: {}",
            self.id,
            text.replace("\r\n", "\n    ")
        ));
        w.write_all(text.as_bytes())?;
        w.write_all(b"\r\n")?;
        w.flush()
    }

    /// One line including its terminator, at most `max` bytes (reads on to the end of an
    /// overlong line so the stream stays in sync).
    fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Line> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(if line.is_empty() && !too_long {
                    Line::Eof
                } else if too_long {
                    Line::TooLong
                } else {
                    Line::Ok(line)
                });
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long {
                if line.len() + take > max {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(&buf[..take]);
                }
            }
            r.consume(take);
            if done {
                return Ok(if too_long {
                    Line::TooLong
                } else {
                    Line::Ok(line)
                });
            }
        }
    }

    fn run(&mut self, stream: TcpStream) -> io::Result<()> {
        let mut w = stream.try_clone()?;
        let mut r = BufReader::new(stream);
        self.shared
            .note(format!("[{}] connection from {}", self.id, self.peer));
        self.reply(
            &mut w,
            &format!("220 {} ESMTP mailbake test inbox", self.opts.hostname),
        )?;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return self.reply(&mut w, "421 4.3.0 shutting down");
            }
            let raw = match Self::read_line(&mut r, self.opts.max_line_bytes) {
                Ok(Line::Ok(l)) => l,
                Ok(Line::Eof) => return Ok(()),
                Ok(Line::TooLong) => {
                    return self.reply(&mut w, "500 5.5.2 line too long, closing");
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return self.reply(&mut w, "421 4.4.2 idle too long, closing");
                }
                Err(e) => return Err(e),
            };
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            self.shared.note(format!("[{}] C: {line}", self.id));
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
                None => (line.to_ascii_uppercase(), ""),
            };
            match verb.as_str() {
                "EHLO" | "HELO" if arg.is_empty() => {
                    self.reply(&mut w, "501 5.5.4 a domain or address is required")?
                }
                "EHLO" => {
                    self.helo = Some((arg.to_string(), true));
                    self.reset();
                    let size = self.opts.max_message_bytes;
                    self.reply(
                        &mut w,
                        &format!(
                            "250-{} hello {arg}\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                             250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE {size}",
                            self.opts.hostname
                        ),
                    )?
                }
                "HELO" => {
                    self.helo = Some((arg.to_string(), false));
                    self.reset();
                    self.reply(&mut w, &format!("250 {} hello {arg}", self.opts.hostname))?
                }
                "MAIL" => self.mail(&mut w, arg)?,
                "RCPT" => self.rcpt(&mut w, arg)?,
                "DATA" => {
                    if !self.data(&mut r, &mut w)? {
                        return Ok(());
                    }
                }
                "RSET" => {
                    self.reset();
                    self.reply(&mut w, "250 2.0.0 ok")?
                }
                "NOOP" => self.reply(&mut w, "250 2.0.0 ok")?,
                "QUIT" => return self.reply(&mut w, "221 2.0.0 bye"),
                "VRFY" => self.reply(&mut w, "252 2.5.2 cannot verify, send some mail")?,
                "STARTTLS" | "AUTH" => {
                    self.reply(&mut w, "502 5.5.1 not offered by this server")?
                }
                _ => self.reply(&mut w, "500 5.5.2 command not recognised")?,
            }
        }
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    fn mail(&mut self, w: &mut impl Write, arg: &str) -> io::Result<()> {
        if self.helo.is_none() {
            return self.reply(w, "503 5.5.1 say EHLO first");
        }
        if self.mail_from.is_some() {
            return self.reply(w, "503 5.5.1 nested MAIL command");
        }
        let Some(path) = path_arg(arg, "FROM:") else {
            return self.reply(w, "501 5.5.4 syntax: MAIL FROM:<address>");
        };
        // SIZE= declared too large: refuse before the data is sent.
        if let Some(size) = param(arg, "SIZE").and_then(|s| s.parse::<usize>().ok())
            && size > self.opts.max_message_bytes
        {
            return self.reply(w, "552 5.3.4 message too big");
        }
        self.mail_from = Some(path);
        self.reply(w, "250 2.1.0 ok")
    }

    fn rcpt(&mut self, w: &mut impl Write, arg: &str) -> io::Result<()> {
        if self.mail_from.is_none() {
            return self.reply(w, "503 5.5.1 need MAIL first");
        }
        let Some(path) = path_arg(arg, "TO:") else {
            return self.reply(w, "501 5.5.4 syntax: RCPT TO:<address>");
        };
        if !self.opts.accept_domains.is_empty() {
            let domain = path.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !self
                .opts
                .accept_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
            {
                return self.reply(w, "550 5.7.1 relaying denied");
            }
        }
        if self.rcpt_to.len() >= 100 {
            return self.reply(w, "452 4.5.3 too many recipients");
        }
        self.rcpt_to.push(path);
        self.reply(w, "250 2.1.5 ok")
    }

    /// Reads the message up to the lone `.`; false when the connection ended inside it.
    fn data(&mut self, r: &mut impl BufRead, w: &mut impl Write) -> io::Result<bool> {
        if self.mail_from.is_none() || self.rcpt_to.is_empty() {
            self.reply(w, "503 5.5.1 need MAIL and RCPT first")?;
            return Ok(true);
        }
        self.reply(w, "354 end data with <CR><LF>.<CR><LF>")?;
        let max = self.opts.max_message_bytes;
        let mut data = Vec::new();
        let mut too_big = false;
        loop {
            // Line length bounded by what is left of the size limit (+ slack for the final line),
            // so memory stays bounded whatever the peer sends.
            let room = max.saturating_sub(data.len()) + 8;
            let line = match Self::read_line(r, room)? {
                Line::Eof => return Ok(false),
                Line::TooLong => {
                    too_big = true;
                    continue;
                }
                Line::Ok(l) => l,
            };
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            if too_big {
                continue;
            }
            // Dot-unstuffing (RFC 5321 4.5.2): a leading dot was doubled by the client.
            let body = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                &line[..]
            };
            if data.len() + body.len() > max {
                too_big = true;
                data = Vec::new();
                continue;
            }
            data.extend_from_slice(body);
        }
        if too_big {
            self.reset();
            self.reply(w, "552 5.3.4 message too big")?;
            return Ok(true);
        }
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        let msg = Message {
            peer: self.peer,
            helo,
            esmtp,
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            data,
        };
        self.shared.note(format!("[{}] accepted: {msg}", self.id));
        lock(&self.shared.messages).push(msg);
        self.shared.arrived.notify_all();
        self.reply(w, "250 2.0.0 queued")?;
        Ok(true)
    }
}

/// `FROM:<a@b> SIZE=…` → `a@b`; tolerates a space after the colon and a missing `<>`.
fn path_arg(arg: &str, prefix: &str) -> Option<String> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let path = if let Some(inner) = rest.strip_prefix('<') {
        &inner[..inner.find('>')?]
    } else {
        rest.split_whitespace().next()?
    };
    Some(path.to_string())
}

/// Value of ESMTP parameter `name` (`SIZE=123`) after the path.
fn param<'s>(arg: &'s str, name: &str) -> Option<&'s str> {
    arg.split_whitespace().skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}
