//! Fingerprint components of the machine this runs on (Linux): the machine id, the MAC
//! addresses of its physical network interfaces, the CPU model, the id of the disk holding the
//! root filesystem, and the host name. A component that cannot be read (a container without a
//! block device, a machine without a NIC) is left out rather than guessed.

use std::fs;
use std::path::Path;

use protocol::fingerprint::{Components, MAX_COMPONENT_LEN};

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().filter(|c| !c.is_control()).collect())
}

/// `/etc/machine-id` (or the D-Bus copy of it).
fn machine_id() -> Option<String> {
    read_trimmed("/etc/machine-id").or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
}

/// The MAC addresses of physical interfaces (those backed by a device), sorted, comma-joined.
/// Virtual interfaces (bridges, veth, docker) change with software and are skipped, unless
/// there is nothing else.
fn macs() -> Option<String> {
    let mut physical = Vec::new();
    let mut virtual_ = Vec::new();
    for entry in fs::read_dir("/sys/class/net").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let Some(mac) = read_trimmed(entry.path().join("address")) else {
            continue;
        };
        if mac == "00:00:00:00:00:00" {
            continue;
        }
        if entry.path().join("device").exists() {
            physical.push(mac);
        } else {
            virtual_.push(mac);
        }
    }
    let mut macs = if physical.is_empty() { virtual_ } else { physical };
    macs.sort();
    macs.dedup();
    (!macs.is_empty()).then(|| macs.join(","))
}

/// The CPU model from `/proc/cpuinfo`.
fn cpu() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| matches!(key.trim(), "model name" | "Hardware" | "cpu model" | "uarch"))
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The id of the disk holding `/`: its serial or WWID from sysfs, else its `/dev/disk/by-id`
/// name, else the root filesystem's UUID.
fn root_disk() -> Option<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent major:minor root mount-point ...
    let dev = mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(4) == Some(&"/")).then(|| fields.get(2).map(|s| (*s).to_owned()))?
    })?;
    let partition = fs::canonicalize(format!("/sys/dev/block/{dev}")).ok()?;
    // A partition's sysfs directory sits inside its disk's.
    let disk = if partition.join("partition").exists() {
        partition.parent()?.to_path_buf()
    } else {
        partition.clone()
    };
    for attribute in ["device/serial", "device/wwid", "serial", "wwid"] {
        if let Some(id) = read_trimmed(disk.join(attribute)) {
            return Some(id);
        }
    }
    let disk_name = disk.file_name()?.to_string_lossy().into_owned();
    let part_name = partition.file_name()?.to_string_lossy().into_owned();
    let link_to = |dir: &str, target: &str| -> Option<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| {
                fs::canonicalize(e.path())
                    .ok()
                    .is_some_and(|p| p.file_name().is_some_and(|n| n == target))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.into_iter().next()
    };
    link_to("/dev/disk/by-id", &disk_name).or_else(|| link_to("/dev/disk/by-uuid", &part_name))
}

/// The host name.
fn hostname() -> Option<String> {
    read_trimmed("/proc/sys/kernel/hostname").or_else(|| read_trimmed("/etc/hostname"))
}

/// The components of this machine, each at most 256 characters.
#[must_use]
pub fn components() -> Components {
    [
        ("machine-id", machine_id()),
        ("mac", macs()),
        ("cpu", cpu()),
        ("disk", root_disk()),
        ("hostname", hostname()),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        // At most MAX_COMPONENT_LEN bytes, cut at a character boundary.
        let mut value = value?;
        while value.len() > MAX_COMPONENT_LEN {
            value.pop();
        }
        Some((name.to_owned(), value))
    })
    .collect()
}

/// This machine's host name, for display.
#[must_use]
pub fn host_name() -> Option<String> {
    hostname()
}

/// This machine's platform, `linux-x86_64` and the like, sent on activation.
#[must_use]
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_stable_components() {
        let first = components();
        assert!(
            first.contains_key("cpu") || first.contains_key("machine-id"),
            "{first:?}"
        );
        assert_eq!(first, components(), "detection is deterministic");
        assert!(first.values().all(|v| !v.is_empty() && v.len() <= MAX_COMPONENT_LEN));
    }
}
