//! The bounded machine: a fixed arena of buffers, fixed OS worker threads fed by bounded
//! channels, and the memory plan that sizes both from the settings.

pub mod arena;
pub mod compress;
pub mod delta;
pub mod dest;
pub mod extract;
pub mod file_index;
pub mod files_spool;
pub mod image;
pub mod increment;
pub mod plan;
pub mod rate;
pub mod sync;
pub mod tar_repack;
pub mod tar_stream;
pub mod workers;
