// Package config is imds-shim's configuration model: the YAML file decoded
// once into typed values (netip.AddrPort listeners, netip.Prefix ranges,
// parsed ARNs, overflow-checked durations), every default filled in here and
// nowhere else, and one validation.
//
// Decoding walks the YAML node tree itself rather than calling yaml's strict
// decoder, which stops at the first unknown key: an unknown key, a value of
// the wrong type and an invalid value are all collected, and Parse reports
// every problem at once in an *Error, each named once by its key path as the
// operator wrote it (imds.listen, roles[2].role_arn, metadata.tags).
// Bounds on every list and map are constants here and are documented in
// packaging/imds-shim.example.yaml.
// Rules that join several keys live here too, such as what a served role
// may ask of the roles_anywhere source (validateServedWithRolesAnywhere: a
// chained role at most MaxChainedDuration, the directly served one without
// session policy, tags, external ID or source identity), so that they are
// named by key path with every other problem.
//
// The component packages (credentials, imds, netredirect) do not read this
// model: the command's composition root builds each one's own Config from
// it, and a reload compares those to decide what to rebuild. Subpackage
// awsarn holds the one ARN parser, partition table and region rule.
//
// The key names are a public interface — operators' files depend on them —
// so they are only ever added to, never renamed.
package config
