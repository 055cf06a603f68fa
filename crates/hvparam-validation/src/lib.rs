//! Every KVM hvparam of Ganeti: definitions, checks and validation.
