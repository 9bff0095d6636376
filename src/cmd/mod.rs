//! The commands behind the CLI, as library functions: `main.rs` only parses
//! arguments and maps results to exit statuses.

pub mod dlq;
pub mod dlq_print;
pub mod endpoints;
pub mod open_files;
pub mod run;
pub mod verify;

/// How a command failed, which decides the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad usage or configuration: exit status 2.
    #[error("{0}")]
    Usage(String),
    /// Failure at run time: exit status 1.
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl From<crate::config::ConfigError> for CommandError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::Usage(e.to_string())
    }
}

impl CommandError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            Self::Runtime(_) => 1,
        }
    }
}
