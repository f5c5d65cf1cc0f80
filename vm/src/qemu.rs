//! QEMU's command line, one small pure function per concern.

use std::path::{Path, PathBuf};

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (only after a probe VM proved it works here).
    Kvm,
    /// Software emulation: slow, always there.
    Tcg,
}

/// Everything a lab VM is started with.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// The per-run qcow2 overlay (its backing file is the cached base).
    pub disk: PathBuf,
    /// The serial console goes to this file, always.
    pub console_log: PathBuf,
    /// The guest channel: a UNIX socket QEMU listens on.
    pub channel_socket: PathBuf,
    /// QEMU's human monitor: a UNIX socket QEMU listens on.
    pub monitor_socket: PathBuf,
    /// Resume from this saved VM state instead of booting.
    pub loadvm: Option<String>,
}

/// The name the guest agent finds its port under (`/dev/virtio-ports/NAME`).
pub const CHANNEL_NAME: &str = "org.crlab.agent";

pub fn machine_args(accel: Accel, memory_mib: u32, cpus: u32) -> Vec<String> {
    let (accel, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg,thread=multi", "max"),
    };
    vec![
        "-machine".into(),
        "q35".into(),
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        cpu.into(),
        "-m".into(),
        format!("{memory_mib}M"),
        "-smp".into(),
        cpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
    ]
}

pub fn kernel_args(kernel: &Path, initrd: &Path, cmdline: &str) -> Vec<String> {
    vec![
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        cmdline.into(),
    ]
}

pub fn disk_args(disk: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file={},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            disk.display()
        ),
    ]
}

pub fn console_args(log: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("file,id=console,path={}", log.display()),
        "-serial".into(),
        "chardev:console".into(),
    ]
}

pub fn channel_args(socket: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=agent,path={},server=on,wait=off",
            socket.display()
        ),
        "-device".into(),
        "virtio-serial-pci,id=vser".into(),
        "-device".into(),
        format!("virtserialport,bus=vser.0,chardev=agent,name={CHANNEL_NAME}"),
    ]
}

pub fn monitor_args(socket: &Path) -> Vec<String> {
    vec![
        "-monitor".into(),
        format!("unix:{},server=on,wait=off", socket.display()),
    ]
}

pub fn loadvm_args(name: Option<&str>) -> Vec<String> {
    match name {
        Some(n) => vec!["-loadvm".into(), n.into()],
        None => Vec::new(),
    }
}

/// The kernel command line of a lab guest: SELinux on and enforcing.
pub fn lab_cmdline(extra: &str) -> String {
    let base = "root=/dev/vda rw console=ttyS0,115200 security=selinux selinux=1 enforcing=1 \
                audit=1 panic=-1 oops=panic quiet loglevel=4 systemd.show_status=0";
    if extra.is_empty() {
        base.to_string()
    } else {
        format!("{base} {extra}")
    }
}

impl VmConfig {
    /// QEMU's arguments, in a stable order.
    pub fn args(&self) -> Vec<String> {
        let mut a = machine_args(self.accel, self.memory_mib, self.cpus);
        a.extend(kernel_args(&self.kernel, &self.initrd, &self.cmdline));
        a.extend(disk_args(&self.disk));
        a.extend(console_args(&self.console_log));
        a.extend(channel_args(&self.channel_socket));
        a.extend(monitor_args(&self.monitor_socket));
        a.extend(loadvm_args(self.loadvm.as_deref()));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accel: Accel, loadvm: Option<&str>) -> VmConfig {
        VmConfig {
            accel,
            memory_mib: 1024,
            cpus: 2,
            kernel: "/cache/img/vmlinuz".into(),
            initrd: "/cache/img/initrd.img".into(),
            cmdline: lab_cmdline(""),
            disk: "/run/vm/disk.qcow2".into(),
            console_log: "/run/vm/console.log".into(),
            channel_socket: "/run/vm/agent.sock".into(),
            monitor_socket: "/run/vm/monitor.sock".into(),
            loadvm: loadvm.map(String::from),
        }
    }

    #[test]
    fn tcg_cold_boot_command_line() {
        insta::assert_snapshot!(config(Accel::Tcg, None).args().join("\n"));
    }

    #[test]
    fn kvm_warm_start_command_line() {
        insta::assert_snapshot!(config(Accel::Kvm, Some("ready")).args().join("\n"));
    }

    #[test]
    fn cmdline_enforces_selinux() {
        let c = lab_cmdline("crlab.x=1");
        assert!(c.contains("security=selinux selinux=1 enforcing=1"));
        assert!(c.ends_with(" crlab.x=1"));
    }
}
