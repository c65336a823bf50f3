//! Test helper: opens real sockets, optionally shares them with child
//! processes (as a pre-fork server does), reports what it opened as one JSON
//! line on stdout, and holds everything until its stdin closes.
//!
//! ```text
//! pw-listen [--children N [--pad BYTES]] [--reuseport] SPEC...
//! SPEC: tcp4:ADDR  tcp6:ADDR  tcp46:ADDR  udp4:ADDR  udp6:ADDR  conn4 (a loopback TCP connection)
//!       connect:ADDR[=SRC] (a TCP connection to ADDR, from the address SRC when given)
//!       ADDR is IP:PORT, IPv6 in brackets; port 0 picks a free one. tcp6/udp6 set IPV6_V6ONLY,
//!       tcp46 clears it. A connect spec reports its local port.
//! --pad gives each child a command line BYTES longer (as a JVM's class path makes it).
//! --reuseport sets SO_REUSEPORT on every listening socket (a wildcard and a specific address may
//! then listen on one port).
//! ```
//! Output: `{"pid":P,"children":[...],"sockets":[{"spec":"tcp4","port":N},...]}`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use rustix::net::{sockopt, AddressFamily, SocketType};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hold") {
        // A child: holds the inherited fds until its stdin (the parent) closes.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        return Ok(());
    }
    let mut children = 0;
    if args.first().map(String::as_str) == Some("--children") {
        children = args.get(1).context("--children needs a number")?.parse()?;
        args.drain(..2);
    }
    let mut pad = 0;
    if args.first().map(String::as_str) == Some("--pad") {
        pad = args.get(1).context("--pad needs a number")?.parse()?;
        args.drain(..2);
    }
    let mut reuseport = false;
    if args.first().map(String::as_str) == Some("--reuseport") {
        reuseport = true;
        args.remove(0);
    }
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut report = Vec::new();
    for spec in &args {
        let (kind, addr) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
        let port = match kind {
            "tcp4" | "tcp6" | "tcp46" => {
                let addr: SocketAddr = addr.parse().with_context(|| format!("bad address in {spec}"))?;
                let fd = socket(addr, SocketType::STREAM, kind, reuseport)?;
                rustix::net::listen(&fd, 128)?;
                let l = TcpListener::from(fd);
                let port = l.local_addr()?.port();
                held.push(l.into());
                port
            }
            "udp4" | "udp6" => {
                let addr: SocketAddr = addr.parse().with_context(|| format!("bad address in {spec}"))?;
                let fd = socket(addr, SocketType::DGRAM, kind, reuseport)?;
                let u = UdpSocket::from(fd);
                let port = u.local_addr()?.port();
                held.push(u.into());
                port
            }
            "conn4" => {
                let l = TcpListener::bind("127.0.0.1:0")?;
                let c = TcpStream::connect(l.local_addr()?)?;
                let (s, _) = l.accept()?;
                let port = c.local_addr()?.port();
                held.extend([OwnedFd::from(l), OwnedFd::from(c), OwnedFd::from(s)]);
                port
            }
            "connect" => {
                let (to, from) = addr.split_once('=').map_or((addr, None), |(to, from)| (to, Some(from)));
                let to: SocketAddr = to.parse().with_context(|| format!("bad address in {spec}"))?;
                let family = if to.is_ipv4() {
                    AddressFamily::INET
                } else {
                    AddressFamily::INET6
                };
                let fd = rustix::net::socket(family, SocketType::STREAM, None)?;
                if let Some(from) = from {
                    let ip: std::net::IpAddr = from.parse().with_context(|| format!("bad source in {spec}"))?;
                    rustix::net::bind(&fd, &SocketAddr::new(ip, 0)).with_context(|| format!("cannot bind {spec}"))?;
                }
                rustix::net::connect(&fd, &to).with_context(|| format!("cannot connect {spec}"))?;
                let c = TcpStream::from(fd);
                let port = c.local_addr()?.port();
                held.push(c.into());
                port
            }
            _ => bail!("unknown socket spec {spec}"),
        };
        report.push(serde_json::json!({"spec": kind, "port": port}));
    }
    let mut kids = Vec::new();
    if children > 0 {
        // Share every socket with the children: clear close-on-exec so they inherit them.
        for fd in &held {
            rustix::io::fcntl_setfd(fd.as_fd(), rustix::io::FdFlags::empty())?;
        }
        for _ in 0..children {
            let exe = std::env::current_exe()?;
            let mut kid = Command::new(exe);
            kid.arg("--hold");
            if pad > 0 {
                kid.arg("p".repeat(pad));
            }
            kids.push(kid.stdin(Stdio::piped()).spawn()?);
        }
    }
    let line = serde_json::json!({
        "pid": std::process::id(),
        "children": kids.iter().map(|k| k.id()).collect::<Vec<_>>(),
        "sockets": report,
        "fds": held.iter().map(|f| f.as_raw_fd()).collect::<Vec<_>>(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    for mut kid in kids {
        drop(kid.stdin.take());
        let _ = kid.wait();
    }
    Ok(())
}

fn socket(addr: SocketAddr, kind: SocketType, spec: &str, reuseport: bool) -> anyhow::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, kind, None)?;
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, !spec.ends_with("46"))?;
    }
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if reuseport {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr).with_context(|| format!("cannot bind {spec} {addr}"))?;
    Ok(fd)
}
