//! The few facts supervision reads from /proc, parsed in one place: the process ids, and a
//! process's state, parent and process group from `/proc/PID/stat`.

/// The fields of `/proc/PID/stat` supervision uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`, …
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Every process id in /proc.
pub fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// `pid`'s state, parent and process group; `None` once it is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The fields after the command name, which is in parentheses and may hold spaces or `)`.
fn parse(text: &str) -> Option<Stat> {
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    Some(Stat {
        state: fields.next()?.chars().next()?,
        ppid: fields.next()?.parse().ok()?,
        pgrp: fields.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped() {
        let s = parse("4242 (my (odd) name) Z 1 4242 4242 0 -1 4194304").unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'Z',
                ppid: 1,
                pgrp: 4242
            }
        );
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
    }
}
