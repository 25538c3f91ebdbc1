//! Who holds a TCP port, read from /proc: the evidence behind "readiness proves it is our
//! child" and behind every "port taken" message.
//!
//! A port that answers HTTP is not proof that our child answers: Debian's own
//! `prometheus.service` listens on `:9090` (every address, which covers 127.0.0.1:9090), and a
//! Prometheus left over from an earlier run answers `/-/ready` as well as a new one would. So
//! a child counts as ready only when a listening socket on its port is one of the open files
//! of a process in the child's process group (every child leads its own group). The kernel's
//! socket tables (`/proc/net/tcp`, `/proc/net/tcp6`) give the listening sockets' inodes; a
//! process's `/proc/PID/fd` links (`socket:[INODE]`) say which sockets it holds. Reading our
//! own children's fds needs no privilege; naming a stranger needs root, and is best effort.

use std::net::{SocketAddr, TcpListener};

use super::procfs;

/// The kernel's state code for a listening socket in /proc/net/tcp.
const LISTEN: &str = "0A";

/// A process holding a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub name: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// `addr` is already taken; `holder` when /proc could tell by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub addr: SocketAddr,
    pub holder: Option<Holder>,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {} is already in use", self.addr)?;
        match &self.holder {
            Some(h) => write!(f, " by {h}"),
            None => write!(f, " (by a process moninit may not inspect)"),
        }
    }
}

/// Whether `addr` can be bound now. A wildcard listener on the same port (`:9090`) makes a
/// loopback bind fail too, exactly as it would make the child's own bind fail.
pub fn check_free(addr: SocketAddr) -> Result<(), Taken> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Taken {
            addr,
            holder: holder(addr.port()),
        }),
        // Anything else (an address not on this host) is the child's to report.
        Err(_) => Ok(()),
    }
}

/// The process holding a listening socket on `port`, if any is visible.
pub fn holder(port: u16) -> Option<Holder> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    procfs::pids().find_map(|pid| holds_any(pid, &inodes).then(|| describe(pid)))
}

/// Whether a process of the group led by `leader` holds a listening socket on `port`.
pub fn group_listens(leader: i32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    !inodes.is_empty()
        && procfs::pids()
            .filter(|pid| *pid == leader || procfs::stat(*pid).is_some_and(|s| s.pgrp == leader))
            .any(|pid| holds_any(pid, &inodes))
}

/// `pid (comm)`, for messages.
pub fn describe(pid: i32) -> Holder {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    Holder { pid, name }
}

fn holds_any(pid: i32, inodes: &[u64]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            socket_inode(&target.to_string_lossy()).is_some_and(|i| inodes.contains(&i))
        })
    })
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Inodes of the sockets listening on `port`, IPv4 and IPv6, any local address.
fn listening_inodes(port: u16) -> Vec<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| parse_listening(&text, port))
        .collect()
}

/// Listening sockets on `port` in one /proc/net/tcp{,6} table.
fn parse_listening(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            (local_port == port && *f.get(3)? == LISTEN)
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2382 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 41299 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 50001 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_the_port_count() {
        assert_eq!(parse_listening(TABLE, 9090), vec![41234]);
        assert_eq!(parse_listening(TABLE, 3000), vec![50001]);
        assert!(parse_listening(TABLE, 80).is_empty());
    }

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(socket_inode("socket:[41234]"), Some(41234));
        assert_eq!(socket_inode("pipe:[41234]"), None);
    }

    #[test]
    fn a_port_held_by_this_process_is_taken_and_names_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let taken = check_free(addr).unwrap_err();
        assert_eq!(taken.holder.map(|h| h.pid), Some(std::process::id() as i32));
        let me = std::process::id() as i32;
        let group = procfs::stat(me).unwrap().pgrp;
        assert!(group_listens(group, addr.port()));
        drop(listener);
        assert!(check_free(addr).is_ok());
        assert!(!group_listens(group, addr.port()));
    }
}
