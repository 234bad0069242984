//! Config commands: see the Foundation issue.
