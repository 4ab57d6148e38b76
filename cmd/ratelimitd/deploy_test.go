package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The files of deploy/ cannot run here (no container engine or cluster),
// so these tests hold what can go stale in them: the YAML parses, every
// variable they set is one ratelimitd reads, and the Kubernetes policy file
// loads.

// knownEnv is the set of variables `ratelimitd serve` reads.
func knownEnv() map[string]bool {
	var c serveConfig
	m := map[string]bool{}
	for _, s := range serveSettings(&c) {
		for _, e := range s.Env {
			m[e.Name] = true
		}
	}
	return m
}

// ourVar matches the names of variables ratelimitd could read.
var ourVar = regexp.MustCompile(`^(RATELIMIT|RATE_LIMIT|SECURITY)_`)

func readYAMLDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for i, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(b), -1) {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if m != nil {
			docs = append(docs, m)
		}
	}
	return docs
}

// envNames collects the names of environment variables set anywhere in v:
// keys of "environment" maps (compose) and "name" of "env" lists (k8s).
func envNames(v any, into map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			switch k {
			case "environment":
				if m, ok := x.(map[string]any); ok {
					for name := range m {
						into[name] = true
					}
				}
			case "env":
				if l, ok := x.([]any); ok {
					for _, e := range l {
						if m, ok := e.(map[string]any); ok {
							into[m["name"].(string)] = true
						}
					}
				}
			}
			envNames(x, into)
		}
	case []any:
		for _, x := range v {
			envNames(x, into)
		}
	}
}

func checkVars(t *testing.T, file string, names map[string]bool) {
	t.Helper()
	known := knownEnv()
	n := 0
	for name := range names {
		if !ourVar.MatchString(name) {
			continue
		}
		n++
		if !known[name] {
			t.Errorf("%s sets %s, which ratelimitd does not read", file, name)
		}
	}
	if n == 0 {
		t.Errorf("%s sets no ratelimitd variable: the test reads it wrong", file)
	}
}

func TestDeployCompose(t *testing.T) {
	docs := readYAMLDocs(t, "../../deploy/docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, name := range []string{"ratelimitd-1", "ratelimitd-2", "ratelimitd-3", "nginx"} {
		if services[name] == nil {
			t.Errorf("no service %s", name)
		}
	}
	names := map[string]bool{}
	envNames(docs[0], names)
	checkVars(t, "docker-compose.yml", names)
}

func TestDeployKubernetes(t *testing.T) {
	names := map[string]bool{}
	kinds := map[string]bool{}
	var policies string
	for _, f := range []string{"configmap.yaml", "service.yaml", "statefulset.yaml"} {
		for _, doc := range readYAMLDocs(t, "../../deploy/k8s/"+f) {
			kind, _ := doc["kind"].(string)
			kinds[kind] = true
			envNames(doc, names)
			if kind == "ConfigMap" {
				policies, _ = doc["data"].(map[string]any)["policies.yaml"].(string)
			}
		}
	}
	for _, k := range []string{"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"} {
		if !kinds[k] {
			t.Errorf("no %s", k)
		}
	}
	checkVars(t, "k8s", names)

	// The ConfigMap's policy file is what the pods load.
	c, err := loadServeConfig(fakeInput(nil,
		map[string]string{"RATELIMIT_POLICIES": "/etc/ratelimitd/policies.yaml"},
		map[string]string{"/etc/ratelimitd/policies.yaml": policies}))
	if err != nil {
		t.Fatalf("the ConfigMap's policies.yaml: %v", err)
	}
	if p := policyByName(t, c.Policies, "api_limit"); p.Burst != 10 {
		t.Errorf("api_limit burst %d, want the ConfigMap's 10", p.Burst)
	}
	policyByName(t, c.Policies, "login")
}

func TestDeployDockerfileAndUnit(t *testing.T) {
	envLine := regexp.MustCompile(`\b((?:RATELIMIT|RATE_LIMIT|SECURITY)_[A-Z_]+)=`)
	for _, f := range []string{"../../deploy/Dockerfile", "../../deploy/systemd/ratelimitd.service"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			for _, m := range envLine.FindAllStringSubmatch(line, -1) {
				names[m[1]] = true
			}
		}
		checkVars(t, f, names)
	}
}

// TestDeploySystemdUnit runs systemd-analyze verify on the unit, with
// ExecStart pointing at a freshly built binary (skipped without systemd).
func TestDeploySystemdUnit(t *testing.T) {
	if unit, err := os.ReadFile("../../deploy/systemd/ratelimitd.service"); err != nil ||
		!regexp.MustCompile(`(?m)^RestrictAddressFamilies=.*\bAF_NETLINK\b`).Match(unit) {
		t.Errorf("the unit must allow AF_NETLINK, which listing the host's addresses (--gossip-addr 0.0.0.0) needs: %v", err)
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit file is not verified")
	}
	unit, err := os.ReadFile("../../deploy/systemd/ratelimitd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/ratelimitd"), []byte(binary(t)))
	path := filepath.Join(t.TempDir(), "ratelimitd.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
