// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Finding the parts a run needs: QEMU, the guest image, the daemon. Each
//! is given on the command line or built by the project's own script, and
//! a missing or mismatched part is an error that says what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// The repository: `VIRTIO_UDC_ROOT`, or the first directory holding
/// qemu/build.sh above the executable or the current directory.
pub fn repo_root() -> Option<PathBuf> {
    if let Ok(r) = std::env::var("VIRTIO_UDC_ROOT") {
        return Some(PathBuf::from(r));
    }
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for s in starts {
        for dir in s.ancestors() {
            if dir.join("qemu/build.sh").is_file() && dir.join("images/build.sh").is_file() {
                return Some(dir.to_path_buf());
            }
        }
    }
    None
}

/// Runs a build script whose last stdout line is the path it made;
/// progress (stderr) goes to the terminal.
pub(crate) fn run_build_script(script: &Path, args: &[String]) -> Result<PathBuf, Error> {
    eprintln!("udc-vm: {} {}", script.display(), args.join(" "));
    let out = Command::new(script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Missing(format!("cannot run {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Error::Missing(format!(
            "{} failed ({})",
            script.display(),
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("").trim();
    if last.is_empty() {
        return Err(Error::Missing(format!("{} printed no path", script.display())));
    }
    Ok(PathBuf::from(last))
}

/// The QEMU device that carries virtio-udc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Ours, from qemu/patches.
    UdcPci,
    /// QEMU's generic vhost-user device (after 10.1), configured as ID 63.
    TestDevicePci,
}

impl Device {
    /// The -device argument for the chardev `chardev`.
    /// The -device argument; `iommu` puts the device's DMA behind the
    /// machine's IOMMU (iommu_platform=on).
    pub fn arg(self, chardev: &str, iommu: bool) -> String {
        let dev = match self {
            Device::UdcPci => format!("vhost-user-udc-pci,chardev={chardev}"),
            Device::TestDevicePci => format!(
                "vhost-user-test-device-pci,chardev={chardev},virtio-id=63,num_vqs=3,vq_size=1024,config_size=256"
            ),
        };
        if iommu {
            dev + ",iommu_platform=on"
        } else {
            dev
        }
    }
}

pub fn qemu(given: Option<&Path>) -> Result<(PathBuf, Device), Error> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let root = repo_root().ok_or_else(|| {
                Error::Missing(
                    "no --qemu given and no virtio-udc checkout found to build one (set VIRTIO_UDC_ROOT)"
                        .into(),
                )
            })?;
            run_build_script(&root.join("qemu/build.sh"), &[])?
        }
    };
    let out = Command::new(&path)
        .args(["-device", "help"])
        .output()
        .map_err(|e| Error::Missing(format!("QEMU {}: {e}", path.display())))?;
    let devices = String::from_utf8_lossy(&out.stdout);
    if devices.contains("\"vhost-user-udc-pci\"") {
        Ok((path, Device::UdcPci))
    } else if devices.contains("\"vhost-user-test-device-pci\"") {
        eprintln!(
            "udc-vm: {} has no vhost-user-udc-pci; using its generic vhost-user-test-device-pci as virtio ID 63 \
             (see qemu/README.md: it needs ID 63 in QEMU's virtio name table)",
            path.display()
        );
        Ok((path, Device::TestDevicePci))
    } else {
        Err(Error::Missing(format!(
            "{} has neither vhost-user-udc-pci nor vhost-user-test-device-pci: build virtio-udc's QEMU with qemu/build.sh",
            path.display()
        )))
    }
}

/// The guest image directory (docs/vm-tier.md).
#[derive(Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    pub release: String,
}

pub struct ImageSource<'a> {
    pub image: Option<&'a Path>,
    pub kernel: Option<&'a Path>,
    pub modules: Option<&'a Path>,
    pub kdir: Option<&'a Path>,
    pub kernel_version: Option<&'a str>,
}

pub fn image(src: &ImageSource) -> Result<Image, Error> {
    let dir = match src.image {
        Some(d) => d.to_path_buf(),
        None => {
            let root = repo_root().ok_or_else(|| {
                Error::Missing(
                    "no --image given and no virtio-udc checkout found to build one (set VIRTIO_UDC_ROOT)"
                        .into(),
                )
            })?;
            let mut args = Vec::new();
            match (src.kernel, src.modules) {
                (Some(k), Some(m)) => {
                    args.extend(["--kernel".to_string(), k.display().to_string()]);
                    args.extend(["--modules".to_string(), m.display().to_string()]);
                    if let Some(kd) = src.kdir {
                        args.extend(["--kdir".to_string(), kd.display().to_string()]);
                    }
                }
                (None, None) => {
                    if let Some(kd) = src.kdir {
                        args.extend(["--kdir".to_string(), kd.display().to_string()]);
                    } else if let Some(v) = src.kernel_version {
                        args.extend(["--kernel-version".to_string(), v.to_string()]);
                    }
                }
                _ => return Err(Error::Usage("--kernel and --modules go together".into())),
            }
            run_build_script(&root.join("images/build.sh"), &args)?
        }
    };
    let img = Image {
        bzimage: dir.join("bzImage"),
        initramfs: dir.join("initramfs.cpio.gz"),
        release: std::fs::read_to_string(dir.join("kernel.release"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        dir,
    };
    for p in [&img.bzimage, &img.initramfs] {
        if !p.is_file() {
            return Err(Error::Missing(format!(
                "{} is missing: {} is not an image directory (build one with images/build.sh)",
                p.display(),
                img.dir.display()
            )));
        }
    }
    Ok(img)
}

pub fn daemon(given: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Missing(format!("--daemon {}: no such file", p.display())))
        };
    }
    let exe = std::env::current_exe().map_err(|e| Error::Missing(e.to_string()))?;
    let beside = exe.with_file_name("vhost-device-udc");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(Error::Missing(format!(
        "no vhost-device-udc next to {}: build it with `cargo build --release` or give --daemon",
        exe.display()
    )))
}
