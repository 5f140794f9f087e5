package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
)

// Problem is one thing wrong with the file, named by its key path
// (imds.listen, roles[2].role_arn, metadata.tags).
type Problem struct {
	Key string
	Msg string
}

func (p Problem) String() string { return p.Key + ": " + p.Msg }

// Error lists every problem of a file, each key once, in file order.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Keys returns the key path of every problem.
func (e *Error) Keys() []string {
	keys := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		keys[i] = p.Key
	}
	return keys
}

// problems collects findings, merging those of one key into one line so
// that every key is named once.
type problems struct {
	list []Problem
	idx  map[string]int
}

func (p *problems) add(key, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.idx == nil {
		p.idx = map[string]int{}
	}
	if i, ok := p.idx[key]; ok {
		p.list[i].Msg += "; " + msg
		return
	}
	p.idx[key] = len(p.list)
	p.list = append(p.list, Problem{key, msg})
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Problems: p.list}
}

// decode turns b into a Config with defaults filled in, reporting problems
// by key path instead of stopping at the first. present holds the key path
// of every key the file set.
func decode(b []byte, p *problems) (*Config, map[string]bool) {
	var doc yaml.Node
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&doc); err != nil && err.Error() != "EOF" {
		p.add("(file)", "not YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil, nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.add("(file)", "more than one YAML document")
		return nil, nil
	}
	c := defaults()
	d := &decoder{p: p, present: map[string]bool{}}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root := doc.Content[0]
		if root.Kind != yaml.MappingNode && root.Tag != "!!null" {
			p.add("(file)", "line %d: want a mapping of keys", root.Line)
			return nil, nil
		}
		d.mapping("", root, reflect.ValueOf(c).Elem())
	}
	return c, d.present
}

// defaults returns a Config with every default that does not depend on
// another key; fill completes the rest after decoding.
func defaults() *Config {
	return &Config{
		Unidentified: DefaultUnidentified,
		AssumeRole:   AssumeRole{Duration: Duration(DefaultDuration)},
		StartTimeout: Duration(DefaultStartTimeout),
		StopTimeout:  Duration(DefaultStopTimeout),
		IMDS:         IMDS{Tokens: DefaultTokens, HopLimit: DefaultHopLimit},
		Metadata:     Metadata{},
		Network: Network{Manage: true, Link: DefaultLink, Backend: DefaultBackend,
			ReconcileInterval: Duration(DefaultReconcile), IPv6: DefaultIPv6},
		Metrics: Metrics{Listen: DefaultMetricsListen},
		Log:     Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
	}
}

type decoder struct {
	p       *problems
	present map[string]bool
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// fields maps the yaml key names of struct v (inline structs flattened) to
// their values.
func fields(v reflect.Value, into map[string]reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case name == "-":
		case opts == "inline":
			fields(v.Field(i), into)
		default:
			into[name] = v.Field(i)
		}
	}
}

var (
	durationType  = reflect.TypeFor[Duration]()
	addrPortType  = reflect.TypeFor[netip.AddrPort]()
	addrType      = reflect.TypeFor[netip.Addr]()
	prefixType    = reflect.TypeFor[netip.Prefix]()
	roleType      = reflect.TypeFor[awsarn.Role]()
	raType        = reflect.TypeFor[awsarn.RolesAnywhere]()
	stringType    = reflect.TypeFor[string]()
	stringMapType = reflect.TypeFor[map[string]string]()
)

// mapping decodes mapping node n into struct v.
func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.p.add(orFile(path), "line %d: want a mapping of keys", n.Line)
		return
	}
	known := map[string]reflect.Value{}
	fields(v, known)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		f, ok := known[k.Value]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.p.add(orFile(path), "line %d: a key must be a plain name", k.Line)
		case !ok:
			d.p.add(key, "line %d: unknown key %q", k.Line, k.Value)
		case d.present[key]:
			d.p.add(key, "line %d: set twice", k.Line)
		default:
			d.present[key] = true
			d.value(key, val, f)
		}
	}
}

func orFile(path string) string {
	if path == "" {
		return "(file)"
	}
	return path
}

// value decodes node n into v, reporting a problem at key on failure.
func (d *decoder) value(key string, n *yaml.Node, v reflect.Value) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	t := v.Type()
	switch {
	case t == durationType:
		dur, err := parseDuration(n)
		if err != nil {
			d.p.add(key, "line %d: %v", n.Line, err)
			return
		}
		v.Set(reflect.ValueOf(dur))
	case t == addrPortType, t == addrType, t == prefixType, t == roleType, t == raType:
		s, ok := d.scalar(key, n)
		if !ok {
			return
		}
		x, err := parseScalar(t, key, s)
		if err != nil {
			d.p.add(key, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(x))
	case t.Kind() == reflect.Struct:
		d.mapping(key, n, v)
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		nv := reflect.New(t.Elem())
		d.mapping(key, n, nv.Elem())
		v.Set(nv)
	case t.Kind() == reflect.Slice && t.Elem() != stringType:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.p.add(key, "line %d: want a list", n.Line)
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.value(fmt.Sprintf("%s[%d]", key, i), e, s.Index(i))
		}
		v.Set(s)
	case t == stringType && key == "network.ipv6":
		// auto | true | false: YAML reads the last two as booleans.
		if s, ok := d.scalar(key, n); ok {
			v.SetString(s)
		}
	case t == stringMapType:
		if n.Kind == yaml.MappingNode {
			seen := map[string]bool{}
			for i := 0; i < len(n.Content); i += 2 {
				if k := n.Content[i].Value; seen[k] {
					d.p.add(key, "line %d: key %q set twice", n.Content[i].Line, k)
					return
				}
				seen[n.Content[i].Value] = true
			}
		}
		fallthrough
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.p.add(key, "%s", cleanYAMLError(err))
		}
	}
}

func (d *decoder) scalar(key string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.p.add(key, "line %d: want a single value", n.Line)
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

// parseScalar parses the typed scalars of the model; "" is the zero value.
func parseScalar(t reflect.Type, key, s string) (any, error) {
	switch t {
	case addrPortType:
		if s == "" {
			return netip.AddrPort{}, nil
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not IP:PORT (e.g. 127.0.0.1:254 or [::1]:254)", s)
		}
		return ap, nil
	case addrType:
		if s == "" {
			return netip.Addr{}, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", s)
		}
		return a, nil
	case prefixType:
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix such as 172.17.0.0/16", s)
		}
		if pf != pf.Masked() {
			return nil, fmt.Errorf("%q has host bits set; write %s", s, pf.Masked())
		}
		return pf, nil
	case roleType:
		if s == "" {
			return awsarn.Role{}, nil
		}
		return awsarn.ParseRole(s)
	case raType:
		if s == "" {
			return awsarn.RolesAnywhere{}, nil
		}
		kind := awsarn.Profile
		if strings.HasSuffix(key, "trust_anchor_arn") {
			kind = awsarn.TrustAnchor
		}
		return awsarn.ParseRolesAnywhere(s, kind)
	}
	return nil, fmt.Errorf("internal: no parser for %s", t)
}

// parseDuration reads a Go duration or whole seconds, refusing values that
// do not fit in a time.Duration instead of letting them wrap.
func parseDuration(n *yaml.Node) (Duration, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, errors.New("want a duration such as 1h or 3600")
	}
	if secs, err := strconv.ParseInt(n.Value, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if err != nil || secs > math.MaxInt64/int64(time.Second) || secs < math.MinInt64/int64(time.Second) {
			return 0, fmt.Errorf("%s seconds is too large a duration", n.Value)
		}
		return Duration(time.Duration(secs) * time.Second), nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (use e.g. 1h, 15m, 3600)", n.Value)
	}
	return Duration(v), nil
}

var yamlLineRE = regexp.MustCompile(`^(line \d+: )?cannot unmarshal !!(\w+) ` + "`?([^`]*)`?" + ` into (.*)$`)

// cleanYAMLError turns yaml's "cannot unmarshal !!str `x` into int" into
// wording that names the value and what was wanted.
func cleanYAMLError(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if g := yamlLineRE.FindStringSubmatch(m); g != nil {
			m = fmt.Sprintf("%s%s %q is not %s", g[1], kindName(g[2]), g[3], typeName(g[4]))
		}
		msgs = append(msgs, m)
	}
	return strings.Join(msgs, "; ")
}

func kindName(tag string) string {
	switch tag {
	case "seq":
		return "a list"
	case "map":
		return "a mapping"
	default:
		return "value"
	}
}

func typeName(t string) string {
	switch {
	case t == "int":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a single value"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	}
	return t
}
