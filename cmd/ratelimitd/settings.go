package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vibewell/ratelimit/cluster"
)

// A setting is one line of a subcommand's configuration table: its flag,
// environment variables, config-file field, default, documentation and
// parser. The resolver applies, for every setting, the default, then the
// config file, then the environment, then the flag: flag > env > file >
// default.
type setting struct {
	// Flag is the flag name without dashes, e.g. "http-addr".
	Flag string
	// Kind names the value type in --help, e.g. "int"; "bool" makes the
	// flag usable without a value (--shadow).
	Kind string
	// Env lists the environment variables that set it. The first one set
	// (non-empty) wins.
	Env []envVar
	// Field is the config-file field; empty if the file cannot set it.
	Field string
	// Default is the default as text, parsed by Set like any other value.
	// Empty means the zero value.
	Default string
	// DefaultDoc replaces Default in --help when the default is computed.
	DefaultDoc string
	// Doc says what the setting does, in one or two sentences.
	Doc string
	// Set parses a value and stores it. Its error says what is wrong with
	// the value; the resolver prefixes where the value came from.
	Set func(v string) error
}

// envVar is an environment variable of a setting. Map, if set, turns the
// variable's value into the setting's value text (e.g. inverts a boolean).
type envVar struct {
	Name string
	Map  func(v string) (string, error)
	Doc  string // how the value maps, for --help
}

// std returns a setting with the standard names derived from flag: env
// RATELIMIT_FLAG_NAME and file field flag_name.
func std(kind, flagName, def, doc string, set func(string) error) setting {
	under := strings.ReplaceAll(flagName, "-", "_")
	return setting{
		Flag: flagName, Kind: kind, Env: []envVar{{Name: "RATELIMIT_" + strings.ToUpper(under)}},
		Field: under, Default: def, Doc: doc, Set: set,
	}
}

// alsoEnv returns s with one more environment variable, of lower
// precedence than those it has.
func (s setting) alsoEnv(e envVar) setting {
	s.Env = append(append([]envVar(nil), s.Env...), e)
	return s
}

// noFile returns s without a config-file field.
func (s setting) noFile() setting { s.Field = ""; return s }

// defaultDoc returns s with the default shown in --help as doc.
func (s setting) defaultDoc(doc string) setting { s.DefaultDoc = doc; return s }

func stringOpt(p *string, flagName, def, doc string) setting {
	return std("string", flagName, def, doc, func(v string) error { *p = v; return nil })
}

func intOpt(p *int64, lo, hi int64, flagName, def, doc string) setting {
	return std("int", flagName, def, doc, parseInt(p, lo, hi))
}

func boolOpt(p *bool, flagName, doc string) setting {
	return std("bool", flagName, "false", doc, func(v string) error {
		b, err := parseBool(v)
		*p = b
		return err
	})
}

func durationOpt(p *time.Duration, lo time.Duration, flagName, def, doc string) setting {
	return std("duration", flagName, def, doc, func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 10s, 1m30s)", v)
		}
		if d < lo {
			return fmt.Errorf("must be at least %v, got %v", lo, d)
		}
		*p = d
		return nil
	})
}

func choiceOpt(p *string, flagName, def, doc string, choices ...string) setting {
	return std("string", flagName, def, doc+" One of: "+strings.Join(choices, ", ")+".", func(v string) error {
		for _, c := range choices {
			if v == c {
				*p = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(choices, ", "))
	})
}

// listOpt is a comma-separated list; blanks around items are dropped.
func listOpt(p *[]string, flagName, doc string) setting {
	return std("list", flagName, "", doc, func(v string) error {
		*p = nil
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				*p = append(*p, item)
			}
		}
		return nil
	})
}

// envOnly returns s read from the environment variable name alone, as an
// existing deployment spells it (REDIS_URL), instead of RATELIMIT_....
func envOnly(s setting, name string) setting {
	s.Env = []envVar{{Name: name}}
	return s
}

// parseClusterKey returns a parser of a cluster key (base64url of 32
// bytes). Its errors never repeat the value, a secret.
func parseClusterKey(p *[]byte) func(string) error {
	return func(v string) error {
		k, err := cluster.ParseClusterKey(v)
		if err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), "cluster: "))
		}
		*p = k
		return nil
	}
}

// parseGossipKey returns a parser of a base64 key of 16, 24 or 32 bytes.
func parseGossipKey(p *[]byte) func(string) error {
	return func(v string) error {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil {
			return errors.New("not base64 (make one with: head -c 32 /dev/urandom | base64)")
		}
		switch len(b) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("%d bytes once decoded, want 16, 24 or 32", len(b))
		}
		*p = b
		return nil
	}
}

func levelOpt(p *slog.Level, flagName, def, doc string) setting {
	return std("level", flagName, def, doc, func(v string) error {
		var l slog.Level
		if err := l.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%q is not a log level (want debug, info, warn or error)", v)
		}
		*p = l
		return nil
	})
}

// parseInt returns a parser of a base-10 integer in [lo, hi].
func parseInt(p *int64, lo, hi int64) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		if n < lo || n > hi {
			if hi == math.MaxInt64 {
				return fmt.Errorf("must be at least %d, got %d", lo, n)
			}
			return fmt.Errorf("must be between %d and %d, got %d", lo, hi, n)
		}
		*p = n
		return nil
	}
}

func parseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("%q is not a boolean (want true or false)", v)
	}
	return b, nil
}

// invertBool maps a boolean to its negation: SECURITY_ENABLE_RATE_LIMITING
// = false means shadow = true.
func invertBool(v string) (string, error) {
	b, err := parseBool(v)
	if err != nil {
		return "", err
	}
	return strconv.FormatBool(!b), nil
}

// errHelp is returned by resolve when --help or -h was given; the usage has
// been written.
var errHelp = errors.New("help requested")

// resolved is what resolve found besides the settings it stored.
type resolved struct {
	// Args are the positional arguments, in order.
	Args []string
	// Source names where each setting's value came from, by flag name:
	// "--http-addr", "RATELIMIT_HTTP_ADDR", "ratelimit.yaml: http_addr". A
	// setting left at its default is absent.
	Source map[string]string
}

// resolveInput is what resolve reads: the command line, the environment and
// files. Tests pass fakes.
type resolveInput struct {
	Args     []string
	Getenv   func(string) string
	ReadFile func(string) ([]byte, error)
	// ConfigFlag names the setting whose value is the path of a config file
	// ("config"); empty if the subcommand has none.
	ConfigFlag string
	// Usage writes --help.
	Usage func(w io.Writer)
	Help  io.Writer
}

// resolve applies the table: defaults, then the config file, then the
// environment, then the flags. Every error names the flag, variable or
// field it came from. Flags and positional arguments may be interleaved;
// "--" ends the flags.
func resolve(table []setting, in resolveInput) (resolved, error) {
	res := resolved{Source: map[string]string{}}
	byFlag := map[string]*setting{}
	byField := map[string]*setting{}
	for i := range table {
		s := &table[i]
		byFlag[s.Flag] = s
		if s.Field != "" {
			byField[s.Field] = s
		}
	}

	// Parse the command line first: --help and unknown flags stop early.
	flags, args, err := parseFlags(table, in)
	if err != nil {
		return res, err
	}
	res.Args = args

	for i := range table {
		s := &table[i]
		if s.Default == "" {
			continue
		}
		if err := s.Set(s.Default); err != nil {
			return res, fmt.Errorf("default of --%s: %w", s.Flag, err)
		}
	}

	// The config file: its path comes from the flag or the environment.
	if in.ConfigFlag != "" {
		cs := byFlag[in.ConfigFlag]
		path, ok := flags[cs.Flag]
		if !ok {
			if name, v := lookupEnv(cs, in.Getenv); name != "" {
				path = v
			}
		}
		if path != "" {
			if err := applyConfigFile(path, byField, in.ReadFile, res.Source); err != nil {
				return res, err
			}
		}
	}

	for i := range table {
		s := &table[i]
		name, v := lookupEnv(s, in.Getenv)
		if name == "" {
			continue
		}
		for _, e := range s.Env {
			if e.Name == name && e.Map != nil {
				var err error
				if v, err = e.Map(v); err != nil {
					return res, fmt.Errorf("%s: %w", name, err)
				}
			}
		}
		if err := s.Set(v); err != nil {
			return res, fmt.Errorf("%s: %w", name, err)
		}
		res.Source[s.Flag] = name
	}

	for i := range table {
		s := &table[i]
		v, ok := flags[s.Flag]
		if !ok {
			continue
		}
		if err := s.Set(v); err != nil {
			return res, fmt.Errorf("--%s: %w", s.Flag, err)
		}
		res.Source[s.Flag] = "--" + s.Flag
	}
	return res, nil
}

// lookupEnv returns the first of s's variables that is set and non-empty.
func lookupEnv(s *setting, getenv func(string) string) (name, value string) {
	for _, e := range s.Env {
		if v := getenv(e.Name); v != "" {
			return e.Name, v
		}
	}
	return "", ""
}

// rawFlag records a flag's text; bool settings take no value.
type rawFlag struct {
	name   string
	isBool bool
	into   map[string]string
	isSet  bool
}

func (f *rawFlag) String() string { return "" }

func (f *rawFlag) Set(v string) error {
	if f.isSet {
		return fmt.Errorf("given twice")
	}
	f.isSet = true
	f.into[f.name] = v
	return nil
}

func (f *rawFlag) IsBoolFlag() bool { return f.isBool }

// parseFlags reads flags and positional arguments, which may be
// interleaved, into a flag name → text map.
func parseFlags(table []setting, in resolveInput) (map[string]string, []string, error) {
	vals := map[string]string{}
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, s := range table {
		fs.Var(&rawFlag{name: s.Flag, isBool: s.Kind == "bool", into: vals}, s.Flag, s.Doc)
	}
	var args []string
	rest := in.Args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				if in.Usage != nil && in.Help != nil {
					in.Usage(in.Help)
				}
				return nil, nil, errHelp
			}
			return nil, nil, err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		// fs.Parse stops at the first positional argument, and consumes a
		// lone "--" itself: if one preceded rest, everything is positional.
		consumed := in.Args[:len(in.Args)-len(rest)]
		if len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			args = append(args, rest...)
			break
		}
		args = append(args, rest[0])
		rest = rest[1:]
	}
	return vals, args, nil
}

// applyConfigFile reads a YAML file of field: value lines and applies each
// through its setting. Unknown fields, duplicate fields and nested values
// are errors.
func applyConfigFile(path string, byField map[string]*setting, readFile func(string) ([]byte, error), source map[string]string) error {
	b, err := readFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var fields map[string]json.RawMessage
	if len(bytes.TrimSpace(j)) > 0 && !bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		if err := json.Unmarshal(j, &fields); err != nil {
			return fmt.Errorf("config file %s: want a mapping of field: value, %w", path, err)
		}
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := byField[name]
		if s == nil {
			return fmt.Errorf("config file %s: unknown field %q", path, name)
		}
		v, err := scalarText(fields[name])
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, name, err)
		}
		if err := s.Set(v); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, name, err)
		}
		source[s.Flag] = path + ": " + name
	}
	return nil
}

// scalarText turns a JSON scalar into the text a setting parses.
func scalarText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", errors.New("has no value")
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case raw[0] == '{' || raw[0] == '[':
		return "", errors.New("must be a single value, not a list or mapping")
	}
	return string(raw), nil // a number or a boolean, as written
}

// writeSettings writes the table for --help: each flag with its type, doc,
// environment variables, config-file field and default.
func writeSettings(w io.Writer, table []setting) {
	for _, s := range table {
		kind := " " + s.Kind
		if s.Kind == "bool" {
			kind = ""
		}
		fmt.Fprintf(w, "  --%s%s\n", s.Flag, kind)
		fmt.Fprintf(w, "      %s\n", s.Doc)
		var where []string
		for _, e := range s.Env {
			if e.Doc != "" {
				where = append(where, "env "+e.Name+" ("+e.Doc+")")
			} else {
				where = append(where, "env "+e.Name)
			}
		}
		if s.Field != "" {
			where = append(where, "file "+s.Field)
		}
		switch {
		case s.DefaultDoc != "":
			where = append(where, "default "+s.DefaultDoc)
		case s.Default != "":
			where = append(where, "default "+s.Default)
		}
		fmt.Fprintf(w, "      %s\n", strings.Join(where, "; "))
	}
}
