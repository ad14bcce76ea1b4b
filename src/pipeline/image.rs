//! The process image terms of the memory plan: what `/proc/self/maps` says the executable,
//! the shared libraries, the kernel's pages and the main stack map. Apart from the plan's
//! arithmetic because it reads the running process, not the settings.

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Stand-in for the image terms when `/proc/self/maps` cannot be read: a 6 MiB binary and
/// glibc's 3.2 MiB of libraries, with room to grow.
pub const IMAGE_FALLBACK: u64 = 24 * MIB;

/// The process image's address space, by kind, as `/proc/self/maps` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// The executable's mappings and its `.bss`.
    pub executable: u64,
    /// Shared libraries (ld.so, libc, ...) and their `.bss`; 0 for a static build.
    pub shared_libraries: u64,
    /// vdso and vvar pages.
    pub kernel: u64,
    /// The main thread's stack mapping as it is now.
    pub main_stack: u64,
}

/// Parses `/proc/<pid>/maps` text into an [`Image`]. `exe` is the executable's path as the
/// maps show it. File-backed mappings count in full; an anonymous mapping that starts where a
/// writable file-backed mapping ends is that object's `.bss`; the heap, thread stacks and
/// other anonymous mappings are left out (the heap and stack terms cover them).
pub fn parse_maps(maps: &str, exe: &str) -> Image {
    let mut image = Image::default();
    // (end, owner is the executable, writable) of the previous file-backed mapping.
    let mut prev: Option<(u64, bool, bool)> = None;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).map(|first| {
            // Paths may contain spaces; keep the rest of the line.
            let at = line.find(first).unwrap_or(line.len());
            line[at..].trim_end()
        });
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let size = end.saturating_sub(start);
        match path {
            Some(p) if p.starts_with('/') => {
                let is_exe = p.strip_suffix(" (deleted)").unwrap_or(p) == exe;
                if is_exe {
                    image.executable += size;
                } else {
                    image.shared_libraries += size;
                }
                prev = Some((end, is_exe, perms.starts_with("rw")));
                continue;
            }
            Some("[vdso]") | Some("[vvar]") | Some("[vvar_vclock]") => image.kernel += size,
            Some("[stack]") => image.main_stack += size,
            None => {
                if let Some((prev_end, is_exe, true)) = prev
                    && prev_end == start
                {
                    if is_exe {
                        image.executable += size;
                    } else {
                        image.shared_libraries += size;
                    }
                }
            }
            Some(_) => {}
        }
        prev = None;
    }
    image
}

/// This process's image, read once from `/proc/self/maps`; [`IMAGE_FALLBACK`] (as the
/// executable) when that cannot be read.
pub fn image() -> Image {
    static IMAGE: std::sync::OnceLock<Image> = std::sync::OnceLock::new();
    *IMAGE.get_or_init(|| {
        let exe = std::fs::read_link("/proc/self/exe").map(|p| p.to_string_lossy().into_owned());
        match (std::fs::read_to_string("/proc/self/maps"), exe) {
            (Ok(maps), Ok(exe)) => {
                let image = parse_maps(&maps, &exe);
                if image.executable > 0 {
                    image
                } else {
                    Image {
                        executable: IMAGE_FALLBACK,
                        ..Image::default()
                    }
                }
            }
            _ => Image {
                executable: IMAGE_FALLBACK,
                main_stack: 132 * KIB,
                ..Image::default()
            },
        }
    })
}
