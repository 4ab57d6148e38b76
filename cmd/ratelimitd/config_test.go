package main

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

// fakeInput builds a resolveInput from a fake environment and fake files.
func fakeInput(args []string, env map[string]string, files map[string]string) resolveInput {
	return resolveInput{
		Args:   args,
		Getenv: func(k string) string { return env[k] },
		ReadFile: func(name string) ([]byte, error) {
			if s, ok := files[name]; ok {
				return []byte(s), nil
			}
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		},
	}
}

func policyByName(t *testing.T, ps []bucket.Policy, name string) bucket.Policy {
	t.Helper()
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no policy %q in %v", name, ps)
	return bucket.Policy{}
}

func TestServeConfigDefaults(t *testing.T) {
	c, err := loadServeConfig(fakeInput(nil, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.LogFormat != "text" || c.LogLevel != slog.LevelInfo ||
		c.MaxBatch != httpapi.DefaultMaxBatch || c.MaxBodyBytes != httpapi.DefaultMaxBodyBytes ||
		c.MaxKeyLen != cluster.DefaultMaxKeyLen || c.MaxHits != cluster.DefaultMaxHits ||
		c.ShutdownTimeout != 10*time.Second || c.Shadow || c.LogDenials ||
		c.NodeName != "" || c.DataDir != "" || c.PoliciesFile != "" {
		t.Errorf("defaults: %+v", c)
	}
	if !reflect.DeepEqual(c.Policies, cluster.DefaultPolicies()) {
		t.Errorf("policies = %v, want the built-in %v", c.Policies, cluster.DefaultPolicies())
	}
}

// TestServeConfigResolve covers precedence (flag > env > file > default)
// and the seed's variables.
func TestServeConfigResolve(t *testing.T) {
	type files = map[string]string
	type env = map[string]string
	tests := []struct {
		name  string
		args  []string
		env   env
		files files
		check func(t *testing.T, c serveConfig)
	}{
		{
			name: "env sets http addr",
			env:  env{"RATELIMIT_HTTP_ADDR": "0.0.0.0:9000"},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "0.0.0.0:9000" {
					t.Errorf("HTTPAddr = %q", c.HTTPAddr)
				}
			},
		},
		{
			name:  "file beats default",
			args:  []string{"--config", "c.yaml"},
			files: files{"c.yaml": "http_addr: 10.0.0.1:1\nmax_batch: 7\nshadow: true\nshutdown_timeout: 3s\nlog_level: debug\n"},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "10.0.0.1:1" || c.MaxBatch != 7 || !c.Shadow || c.ShutdownTimeout != 3*time.Second || c.LogLevel != slog.LevelDebug {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name:  "env beats file",
			args:  []string{"--config", "c.yaml"},
			env:   env{"RATELIMIT_HTTP_ADDR": "from-env:1"},
			files: files{"c.yaml": "http_addr: from-file:1\n"},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "from-env:1" {
					t.Errorf("HTTPAddr = %q", c.HTTPAddr)
				}
			},
		},
		{
			name:  "flag beats env and file",
			args:  []string{"--config", "c.yaml", "--http-addr", "from-flag:1"},
			env:   env{"RATELIMIT_HTTP_ADDR": "from-env:1"},
			files: files{"c.yaml": "http_addr: from-file:1\n"},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "from-flag:1" {
					t.Errorf("HTTPAddr = %q", c.HTTPAddr)
				}
			},
		},
		{
			name:  "config file path from the environment",
			env:   env{"RATELIMIT_CONFIG": "c.yaml"},
			files: files{"c.yaml": "node_name: n7\n"},
			check: func(t *testing.T, c serveConfig) {
				if c.NodeName != "n7" {
					t.Errorf("NodeName = %q", c.NodeName)
				}
			},
		},
		{
			name: "empty env var counts as unset",
			env:  env{"RATELIMIT_HTTP_ADDR": "", "RATE_LIMIT_AUTH_MAX": ""},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "127.0.0.1:8080" || policyByName(t, c.Policies, "auth").Limit != 10 {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "seed variables set the built-in policies",
			env: env{
				"RATE_LIMIT_DEFAULT_MAX": "61", "RATE_LIMIT_DEFAULT_WINDOW_MS": "61000",
				"RATE_LIMIT_AUTH_MAX": "3", "RATE_LIMIT_AUTH_WINDOW_MS": "1000",
				"RATE_LIMIT_SENSITIVE_MAX": "31", "RATE_LIMIT_SENSITIVE_WINDOW_MS": "3600001",
				"RATE_LIMIT_ADMIN_MAX": "121", "RATE_LIMIT_ADMIN_WINDOW_MS": "59000",
				"RATE_LIMIT_API_MAX": "10", "RATE_LIMIT_API_WINDOW_MS": "2000", "RATE_LIMIT_API_BURST": "20",
			},
			check: func(t *testing.T, c serveConfig) {
				want := map[string][3]int64{ // limit, window ms, burst
					"default": {61, 61000, 0}, "auth": {3, 1000, 0}, "sensitive": {31, 3600001, 0},
					"admin": {121, 59000, 0}, "api_limit": {10, 2000, 20},
				}
				for name, w := range want {
					p := policyByName(t, c.Policies, name)
					if got := [3]int64{p.Limit, p.Window.Milliseconds(), p.Burst}; got != w {
						t.Errorf("%s: limit, window, burst = %v, want %v", name, got, w)
					}
				}
				if p := policyByName(t, c.Policies, "api_limit"); p.Algorithm != bucket.GCRA {
					t.Errorf("api_limit algorithm = %v", p.Algorithm)
				}
				if len(c.Policies) != len(cluster.DefaultPolicies()) {
					t.Errorf("%d policies", len(c.Policies))
				}
			},
		},
		{
			name:  "policy settings from flags and file",
			args:  []string{"--auth-max", "4", "--config", "c.yaml"},
			env:   env{"RATE_LIMIT_AUTH_MAX": "5"},
			files: files{"c.yaml": "auth_max: 6\nauth_window_ms: 7000\n"},
			check: func(t *testing.T, c serveConfig) {
				p := policyByName(t, c.Policies, "auth")
				if p.Limit != 4 || p.Window != 7*time.Second {
					t.Errorf("auth = %+v, want limit 4 (flag) and window 7s (file)", p)
				}
			},
		},
		{
			name: "SECURITY_ENABLE_RATE_LIMITING=false is shadow mode",
			env:  env{"SECURITY_ENABLE_RATE_LIMITING": "false"},
			check: func(t *testing.T, c serveConfig) {
				if !c.Shadow {
					t.Error("Shadow = false")
				}
			},
		},
		{
			name: "SECURITY_ENABLE_RATE_LIMITING=true enforces",
			env:  env{"SECURITY_ENABLE_RATE_LIMITING": "true"},
			check: func(t *testing.T, c serveConfig) {
				if c.Shadow {
					t.Error("Shadow = true")
				}
			},
		},
		{
			name: "RATELIMIT_SHADOW wins over the seed's variable",
			env:  env{"SECURITY_ENABLE_RATE_LIMITING": "false", "RATELIMIT_SHADOW": "false"},
			check: func(t *testing.T, c serveConfig) {
				if c.Shadow {
					t.Error("Shadow = true")
				}
			},
		},
		{
			name: "--shadow=false wins over the environment",
			args: []string{"--shadow=false"},
			env:  env{"SECURITY_ENABLE_RATE_LIMITING": "false"},
			check: func(t *testing.T, c serveConfig) {
				if c.Shadow {
					t.Error("Shadow = true")
				}
			},
		},
		{
			name: "bare --shadow",
			args: []string{"--shadow"},
			check: func(t *testing.T, c serveConfig) {
				if !c.Shadow {
					t.Error("Shadow = false")
				}
			},
		},
		{
			name: "SECURITY_LOG_RATE_LIMIT_EVENTS=true logs denials",
			env:  env{"SECURITY_LOG_RATE_LIMIT_EVENTS": "true"},
			check: func(t *testing.T, c serveConfig) {
				if !c.LogDenials {
					t.Error("LogDenials = false")
				}
			},
		},
		{
			name: "single-dash flags and flag=value",
			args: []string{"-http-addr=a:1", "-log-format", "json", "-max-hits=5"},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "a:1" || c.LogFormat != "json" || c.MaxHits != 5 {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name:  "policy file adds and replaces by name",
			args:  []string{"--policies", "p.yaml"},
			env:   env{"RATE_LIMIT_AUTH_MAX": "3"},
			files: files{"p.yaml": policyYAML},
			check: func(t *testing.T, c serveConfig) {
				auth := policyByName(t, c.Policies, "auth")
				if auth.Limit != 5 || auth.Window != time.Minute || auth.FailureMode != bucket.FailClosed {
					t.Errorf("auth = %+v, want the file's", auth)
				}
				login := policyByName(t, c.Policies, "login")
				want := bucket.Policy{Name: "login", Algorithm: bucket.TokenBucket, Limit: 2, Window: time.Second,
					Burst: 8, Shadow: true, Overrides: map[string]int64{"user:42": 100}}
				if !reflect.DeepEqual(login, want) {
					t.Errorf("login = %+v, want %+v", login, want)
				}
				if len(c.Policies) != len(cluster.DefaultPolicies())+1 {
					t.Errorf("%d policies", len(c.Policies))
				}
				if !reflect.DeepEqual(c.replaced, []string{"auth"}) {
					t.Errorf("replaced = %v", c.replaced)
				}
				if !reflect.DeepEqual(c.ignored, []string{"RATE_LIMIT_AUTH_MAX"}) {
					t.Errorf("ignored = %v, want the variable the file overrules", c.ignored)
				}
			},
		},
		{
			name:  "empty policy file",
			args:  []string{"--policies", "p.yaml"},
			files: files{"p.yaml": "# nothing yet\n"},
			check: func(t *testing.T, c serveConfig) {
				if !reflect.DeepEqual(c.Policies, cluster.DefaultPolicies()) {
					t.Errorf("policies = %v", c.Policies)
				}
			},
		},
		{
			name:  "policy file named in the config file",
			args:  []string{"--config", "c.yaml"},
			files: files{"c.yaml": "policies: p.yaml\n", "p.yaml": policyYAML},
			check: func(t *testing.T, c serveConfig) {
				policyByName(t, c.Policies, "login")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadServeConfig(fakeInput(tt.args, tt.env, tt.files))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

const policyYAML = `
policies:
  - name: auth
    limit: 5
    window_ms: 60000
    failure_mode: closed
  - name: login
    algorithm: token_bucket
    limit: 2
    window_ms: 1000
    burst: 8
    shadow: true
    overrides:
      "user:42": 100
`

// TestServeConfigErrors: every bad value fails with a message that names
// the flag, variable or field, and nothing panics.
func TestServeConfigErrors(t *testing.T) {
	type files = map[string]string
	type env = map[string]string
	tests := []struct {
		name  string
		args  []string
		env   env
		files files
		want  string // the whole message, or a prefix ending in "…"
	}{
		{name: "seed variable not an integer", env: env{"RATE_LIMIT_AUTH_MAX": "ten"},
			want: `RATE_LIMIT_AUTH_MAX: "ten" is not an integer`},
		{name: "seed window zero", env: env{"RATE_LIMIT_ADMIN_WINDOW_MS": "0"},
			want: `RATE_LIMIT_ADMIN_WINDOW_MS: must be between 1 and 31622400000, got 0`},
		{name: "seed max negative", env: env{"RATE_LIMIT_SENSITIVE_MAX": "-1"},
			want: `RATE_LIMIT_SENSITIVE_MAX: must be between 1 and 4294967295, got -1`},
		{name: "default window not a number", env: env{"RATE_LIMIT_DEFAULT_WINDOW_MS": "1m"},
			want: `RATE_LIMIT_DEFAULT_WINDOW_MS: "1m" is not an integer`},
		{name: "api rate above one per microsecond", env: env{"RATE_LIMIT_API_MAX": "2000000"},
			want: `RATE_LIMIT_API_MAX: policy "api_limit": limit: rate 2000000 per 1s is above one per microsecond`},
		{name: "api window makes the rate too fast", env: env{"RATE_LIMIT_API_WINDOW_MS": "1", "RATE_LIMIT_API_MAX": "5000"},
			want: `RATE_LIMIT_API_MAX: policy "api_limit": limit: rate 5000 per 1ms is above one per microsecond`},
		{name: "api burst negative", args: []string{"--api-burst", "-2"},
			want: `--api-burst: must be between 0 and 4294967295, got -2`},
		{name: "shadow variable not a boolean", env: env{"SECURITY_ENABLE_RATE_LIMITING": "maybe"},
			want: `SECURITY_ENABLE_RATE_LIMITING: "maybe" is not a boolean (want true or false)`},
		{name: "log variable not a boolean", env: env{"SECURITY_LOG_RATE_LIMIT_EVENTS": "yes please"},
			want: `SECURITY_LOG_RATE_LIMIT_EVENTS: "yes please" is not a boolean (want true or false)`},
		{name: "flag out of range", args: []string{"--max-batch", "0"},
			want: `--max-batch: must be between 1 and 1000000, got 0`},
		{name: "flag not a duration", args: []string{"--shutdown-timeout", "5"},
			want: `--shutdown-timeout: "5" is not a duration (e.g. 10s, 1m30s)`},
		{name: "log format", env: env{"RATELIMIT_LOG_FORMAT": "xml"},
			want: `RATELIMIT_LOG_FORMAT: "xml" is not one of text, json`},
		{name: "log level", args: []string{"--log-level=loud"},
			want: `--log-level: "loud" is not a log level (want debug, info, warn or error)`},
		{name: "unknown flag", args: []string{"--htp-addr", "x"},
			want: `unknown flag --htp-addr (--help lists the flags)`},
		{name: "flag twice", args: []string{"--http-addr", "a", "--http-addr", "b"},
			want: `invalid value "b" for --http-addr: given twice`},
		{name: "flag without value", args: []string{"--http-addr"},
			want: `flag --http-addr needs a value (--help lists the flags)`},
		{name: "positional argument", args: []string{"now"},
			want: `serve takes no arguments, got "now"`},
		{name: "unknown flag, as given, with a hint", args: []string{"--nope"},
			want: `unknown flag --nope (--help lists the flags)`},
		{name: "duration in its own unit", args: []string{"--forward-timeout", "0s"},
			want: `--forward-timeout: must be at least 1ms, got "0s"`},
		{name: "policy file entry named with its field", args: []string{"--policies", "p.yaml"},
			files: files{"p.yaml": "policies:\n  - {name: x, algorithm: nope, limit: 1, window_ms: 1000}\n"},
			want:  `policy file p.yaml: policies[0] (x).algorithm: policy: unknown algorithm "nope" (want sliding_window, gcra, token_bucket or fixed_window)`},
		{name: "config file's relative policy file is next to it", args: []string{"--config", "etc/c.yaml"},
			files: files{"etc/c.yaml": "policies: p.yaml\n"},
			want:  `policy file: open etc/p.yaml: file does not exist`},
		{name: "config file missing", args: []string{"--config", "nope.yaml"},
			want: `config file: open nope.yaml: file does not exist`},
		{name: "config file unknown field", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "http_adr: x\n"},
			want: `config file c.yaml: unknown field "http_adr"`},
		{name: "config file cannot name another config", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "config: d.yaml\n"},
			want: `config file c.yaml: unknown field "config"`},
		{name: "config file bad value", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "auth_max: ten\n"},
			want: `config file c.yaml: auth_max: "ten" is not an integer`},
		{name: "config file nested value", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "http_addr: [a, b]\n"},
			want: `config file c.yaml: http_addr: must be a single value, not a list or mapping`},
		{name: "config file null value", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "http_addr:\n"},
			want: `config file c.yaml: http_addr: has no value`},
		{name: "config file duplicate field", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "max_batch: 1\nmax_batch: 2\n"},
			want: "config file c.yaml: yaml: unmarshal errors:\n  line 2: key \"max_batch\" already set in map"},
		{name: "config file not a mapping", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "- a\n- b\n"},
			want: `config file c.yaml: want a mapping of field: value, …`},
		{name: "config file not YAML", args: []string{"--config", "c.yaml"}, files: files{"c.yaml": "a: [\n"},
			want: `config file c.yaml: yaml: line 1: did not find expected node content`},
		{name: "policy file missing", args: []string{"--policies", "p.yaml"},
			want: `policy file: open p.yaml: file does not exist`},
		{name: "policy file unknown top-level field", args: []string{"--policies", "p.yaml"}, files: files{"p.yaml": "policy: []\n"},
			want: `policy file p.yaml: want a mapping with a policies list: json: unknown field "policy"`},
		{name: "policy file unknown policy field", args: []string{"--policies", "p.yaml"},
			files: files{"p.yaml": "policies:\n  - name: a\n    limit: 1\n    window_ms: 1000\n  - name: b\n    limt: 1\n"},
			want:  `policy file p.yaml: policies[1] (b): policy: json: unknown field "limt"`},
		{name: "policy file invalid policy", args: []string{"--policies", "p.yaml"},
			files: files{"p.yaml": "policies:\n  - name: a\n    limit: 0\n    window_ms: 1000\n"},
			want:  `policy file p.yaml: policies[0]: policy "a": limit: must be at least 1, got 0`},
		{name: "policy file bad algorithm", args: []string{"--policies", "p.yaml"},
			files: files{"p.yaml": "policies:\n  - name: a\n    algorithm: leaky\n    limit: 1\n    window_ms: 1000\n"},
			want:  `policy file p.yaml: policies[0] (a).algorithm: policy: unknown algorithm "leaky" (want sliding_window, gcra, token_bucket or fixed_window)`},
		{name: "policy file burst on a window", args: []string{"--policies", "p.yaml"},
			files: files{"p.yaml": "policies:\n  - name: a\n    limit: 1\n    window_ms: 1000\n    burst: 3\n"},
			want:  `policy file p.yaml: policies[0]: policy "a": burst: only gcra and token_bucket take a burst; sliding_window counts hits per window`},
		{name: "policy file duplicate name", args: []string{"--policies", "p.yaml"},
			files: files{"p.yaml": "policies:\n  - {name: a, limit: 1, window_ms: 1000}\n  - {name: a, limit: 2, window_ms: 1000}\n"},
			want:  `policy file p.yaml: policies[1]: name "a" is already used by policies[0]`},
		{name: "policy file policies not a list", args: []string{"--policies", "p.yaml"}, files: files{"p.yaml": "policies: 3\n"},
			want: `policy file p.yaml: want a mapping with a policies list: …`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadServeConfig(fakeInput(tt.args, tt.env, tt.files))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if prefix, ok := strings.CutSuffix(tt.want, "…"); ok {
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("error %q, want it to start with %q", err, prefix)
				}
			} else if err.Error() != tt.want {
				t.Errorf("error\n %q, want\n %q", err, tt.want)
			}
		})
	}
}

func TestServeHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	in := fakeInput([]string{"--help"}, nil, nil)
	in.Usage, in.Help = serveUsage, &out
	if _, err := loadServeConfig(in); !errors.Is(err, errHelp) {
		t.Fatalf("err = %v, want errHelp", err)
	}
	help := out.String()
	var c serveConfig
	for _, s := range serveSettings(&c) {
		if !strings.Contains(help, "--"+s.Flag) {
			t.Errorf("help lacks --%s", s.Flag)
		}
		for _, e := range s.Env {
			if !strings.Contains(help, "env "+e.Name) {
				t.Errorf("help lacks %s", e.Name)
			}
		}
		if s.Field != "" && !strings.Contains(help, "file "+s.Field) {
			t.Errorf("help lacks field %s", s.Field)
		}
	}
	for _, want := range []string{
		"env RATE_LIMIT_AUTH_MAX; file auth_max; default 10",
		"env RATE_LIMIT_AUTH_WINDOW_MS; file auth_window_ms; default 900000",
		"env RATELIMIT_HTTP_ADDR; file http_addr; default 127.0.0.1:8080",
		"env SECURITY_ENABLE_RATE_LIMITING (false means shadow)",
		"env RATE_LIMIT_API_BURST; file api_burst; default 0",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
}

// TestSettingsTable holds the table's invariants: unique flags, variables
// and fields, a doc for each, and defaults that parse.
func TestSettingsTable(t *testing.T) {
	var c serveConfig
	var cc checkConfig
	for name, table := range map[string][]setting{"serve": serveSettings(&c), "check": checkSettings(&cc)} {
		flags, envs, fields := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, s := range table {
			if flags[s.Flag] {
				t.Errorf("%s: flag --%s twice", name, s.Flag)
			}
			flags[s.Flag] = true
			for _, e := range s.Env {
				if envs[e.Name] {
					t.Errorf("%s: env %s twice", name, e.Name)
				}
				envs[e.Name] = true
			}
			if s.Field != "" {
				if fields[s.Field] {
					t.Errorf("%s: field %s twice", name, s.Field)
				}
				fields[s.Field] = true
			}
			if s.Doc == "" || s.Kind == "" || s.Set == nil || len(s.Env) == 0 {
				t.Errorf("%s: --%s is incomplete: %+v", name, s.Flag, s)
			}
			if s.Default != "" {
				if err := s.Set(s.Default); err != nil {
					t.Errorf("%s: default of --%s: %v", name, s.Flag, err)
				}
			}
		}
	}
}

func TestCheckArgs(t *testing.T) {
	tests := []struct {
		args     []string
		env      map[string]string
		wantArgs []string
		want     checkConfig
	}{
		{args: []string{"auth", "ip:1"}, wantArgs: []string{"auth", "ip:1"},
			want: checkConfig{Addr: "http://127.0.0.1:8080", Hits: 1, Timeout: 5 * time.Second}},
		{args: []string{"auth", "--hits", "3", "ip:1", "--addr=http://h:1"}, wantArgs: []string{"auth", "ip:1"},
			want: checkConfig{Addr: "http://h:1", Hits: 3, Timeout: 5 * time.Second}},
		{args: []string{"--timeout", "1s", "--", "auth", "--hits"}, wantArgs: []string{"auth", "--hits"},
			env:  map[string]string{"RATELIMIT_ADDR": "http://e:2"},
			want: checkConfig{Addr: "http://e:2", Hits: 1, Timeout: time.Second}},
		{args: []string{"--hits", "0", "p", "k"}, wantArgs: []string{"p", "k"},
			want: checkConfig{Addr: "http://127.0.0.1:8080", Hits: 0, Timeout: 5 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var c checkConfig
			res, err := resolve(checkSettings(&c), fakeInput(tt.args, tt.env, nil))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(res.Args, tt.wantArgs) || c != tt.want {
				t.Errorf("args %q, config %+v; want %q, %+v", res.Args, c, tt.wantArgs, tt.want)
			}
		})
	}
}

// FuzzServeConfig: no value of a variable, flag, config file or policy file
// makes the resolution panic, and every failure names where it came from.
func FuzzServeConfig(f *testing.F) {
	f.Add("ten", "http_addr: x\n", policyYAML, "RATE_LIMIT_AUTH_MAX", "--max-batch=0")
	f.Add("false", "auth_max: 3\n", "policies: 3\n", "SECURITY_ENABLE_RATE_LIMITING", "--shadow")
	f.Add("2000000", "a: [\n", "policies:\n  - {name: a, limit: 1, window_ms: 1000, burst: 1}\n", "RATE_LIMIT_API_MAX", "--api-burst=-1")
	f.Add("", "", "", "RATELIMIT_SHUTDOWN_TIMEOUT", "--log-level=loud")
	var c serveConfig
	var names []string
	for _, s := range serveSettings(&c) {
		for _, e := range s.Env {
			names = append(names, e.Name)
		}
	}
	f.Fuzz(func(t *testing.T, value, config, policies, variable, flagArg string) {
		env := map[string]string{variable: value}
		if len(names) > 0 && len(value) > 0 {
			env[names[int(value[0])%len(names)]] = value
		}
		args := []string{"--config", "c.yaml", "--policies", "p.yaml", flagArg}
		_, err := loadServeConfig(fakeInput(args, env, map[string]string{"c.yaml": config, "p.yaml": policies}))
		if err == nil {
			return
		}
		msg := err.Error()
		named := strings.HasPrefix(msg, "--") || strings.HasPrefix(msg, "config file") ||
			strings.HasPrefix(msg, "policy file") || strings.HasPrefix(msg, "flag ") ||
			strings.HasPrefix(msg, "invalid ") || strings.HasPrefix(msg, "bad flag syntax") ||
			strings.HasPrefix(msg, "serve takes no arguments")
		for _, n := range names {
			named = named || strings.HasPrefix(msg, n+": ")
		}
		if !named {
			t.Errorf("error %q does not start with its source", msg)
		}
	})
}
