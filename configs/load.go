package configs

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes environment overrides: SAMDIFFSR_TRAIN_BATCH_SIZE sets train.batch_size.
const EnvPrefix = "SAMDIFFSR"

// envIgnored are SAMDIFFSR_* variables that are not config keys.
var envIgnored = map[string]bool{"SAMDIFFSR_CONFIG": true, "SAMDIFFSR_LOG_LEVEL": true}

// Problem is one thing wrong with a configuration: the key, the value found and what is allowed.
type Problem struct {
	// Source is the file (or "env") the value came from, when known.
	Source string
	// Key is the dotted config key, e.g. "diffusion.modulation".
	Key string
	// Value is the offending value as written.
	Value string
	// Allowed says what would be accepted.
	Allowed string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Source != "" {
		b.WriteString(p.Source)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%s: %s; %s", p.Key, p.Value, p.Allowed)
	return b.String()
}

// ProblemsError reports every problem found in a configuration.
type ProblemsError struct {
	Problems []Problem
}

func (e *ProblemsError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return "invalid configuration:\n" + strings.Join(lines, "\n")
}

// Env looks up environment variables; os.LookupEnv in production, a map in tests.
type Env func(key string) (string, bool)

// Environ lists environment variables as KEY=VALUE; os.Environ in production.
type Environ func() []string

// LoadOptions say where configuration comes from.
type LoadOptions struct {
	// Files are YAML files merged in order (later files override earlier ones).
	Files []string
	// Environ lists the environment; nil means no environment overrides.
	Environ Environ
}

// Load builds the effective configuration: Default(), then each file in order, then
// SAMDIFFSR_* environment overrides, then validation. Any problem (unknown key, bad
// type, out-of-range value) is returned together in a *ProblemsError.
func Load(opts LoadOptions) (Config, error) {
	def := Default()
	defMap, err := toMap(def)
	if err != nil {
		return Config{}, fmt.Errorf("configs: encode defaults: %w", err)
	}
	known := map[string]bool{}
	flatten("", defMap, known)
	// viper merges into defMap's nested maps; keep a copy for the types of the defaults.
	defTypes, err := toMap(def)
	if err != nil {
		return Config{}, fmt.Errorf("configs: encode defaults: %w", err)
	}

	var problems []Problem
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.MergeConfigMap(defMap); err != nil {
		return Config{}, fmt.Errorf("configs: defaults: %w", err)
	}
	for _, f := range opts.Files {
		data, err := os.ReadFile(f)
		if err != nil {
			return Config{}, fmt.Errorf("configs: read config file %s: %w (check the --config path)", f, err)
		}
		var raw map[string]any
		if err := yaml.Unmarshal(data, &raw); err != nil {
			problems = append(problems, Problem{Source: f, Key: "(file)", Value: "not valid YAML",
				Allowed: fmt.Sprintf("%v; fix the syntax at the line shown (keys are `key: value`, nested by indenting with spaces)", err)})
			continue
		}
		keys := map[string]bool{}
		flatten("", raw, keys)
		for _, k := range sortedKeys(keys) {
			if !known[k] && !isParentKey(k, known) {
				problems = append(problems, Problem{Source: f, Key: k, Value: "unknown key", Allowed: suggest(k, known)})
			}
		}
		if err := v.MergeConfig(bytes.NewReader(data)); err != nil {
			return Config{}, fmt.Errorf("configs: merge %s: %w", f, err)
		}
		for _, k := range sortedKeys(keys) {
			if p, ok := typeProblem(f, k, leaf(raw, k), leaf(defTypes, k)); ok {
				problems = append(problems, p)
				v.Set(k, leaf(defTypes, k)) // decode the rest; range errors are still reported
			}
		}
	}
	if opts.Environ != nil {
		for _, kv := range opts.Environ() {
			name, val, ok := strings.Cut(kv, "=")
			if !ok || !strings.HasPrefix(name, EnvPrefix+"_") || envIgnored[name] {
				continue
			}
			key := envToKey(name, known)
			if key == "" {
				problems = append(problems, Problem{Source: "env", Key: name, Value: fmt.Sprintf("%q", val),
					Allowed: "no config key has this name (SAMDIFFSR_ + key with '.' as '_', upper case, e.g. SAMDIFFSR_TRAIN_BATCH_SIZE)"})
				continue
			}
			if p, ok := typeProblem("env "+name, key, val, leaf(defTypes, key)); ok {
				problems = append(problems, p)
				continue
			}
			v.Set(key, val)
		}
	}
	var cfg Config
	decodeErr := v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.WeaklyTypedInput = true
		dc.ErrorUnused = false
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		)
	})
	if decodeErr != nil {
		problems = append(problems, decodeProblems(decodeErr)...)
	}
	if decodeErr == nil {
		problems = append(problems, cfg.Validate()...)
	}
	if len(problems) > 0 {
		return cfg, &ProblemsError{Problems: problems}
	}
	return cfg, nil
}

// LoadFiles is Load with the process environment.
func LoadFiles(files ...string) (Config, error) {
	return Load(LoadOptions{Files: files, Environ: os.Environ})
}

// YAML renders a configuration as YAML with the same keys the files use.
func (c Config) YAML() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("configs: encode yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("configs: encode yaml: %w", err)
	}
	return b.Bytes(), nil
}

// toMap turns a Config into the nested map viper merges.
func toMap(c Config) (map[string]any, error) {
	data, err := c.YAML()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// flatten records the dotted leaf keys of a nested map.
func flatten(prefix string, m map[string]any, out map[string]bool) {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			flatten(key, sub, out)
			continue
		}
		out[key] = true
	}
}

func isParentKey(k string, known map[string]bool) bool {
	for kk := range known {
		if strings.HasPrefix(kk, k+".") {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// envToKey maps SAMDIFFSR_TRAIN_BATCH_SIZE to train.batch_size, or "" when no key matches.
func envToKey(name string, known map[string]bool) string {
	want := strings.TrimPrefix(name, EnvPrefix+"_")
	for k := range known {
		if strings.ToUpper(strings.ReplaceAll(k, ".", "_")) == want {
			return k
		}
	}
	return ""
}

// suggest names the closest known key, to catch typos.
func suggest(k string, known map[string]bool) string {
	best, bestD := "", 1<<30
	for kk := range known {
		if d := editDistance(k, kk); d < bestD || (d == bestD && kk < best) {
			best, bestD = kk, d
		}
	}
	if best != "" && bestD <= 3 {
		return fmt.Sprintf("did you mean %s? (`samdiffsr config print` lists every key)", best)
	}
	return "remove it (`samdiffsr config print` lists every key)"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// leaf returns the value at a dotted key of a nested map (nil when absent).
func leaf(m map[string]any, key string) any {
	var cur any = m
	for _, part := range strings.Split(key, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[part]
	}
	return cur
}

// typeProblem checks a value from source (a file, or "env NAME" with a string value)
// against the type of the key's default: integers must be whole numbers (8.5 is not
// truncated to 8), numbers numbers and booleans true or false. Strings, durations and
// lists are left to decoding and Validate.
func typeProblem(source, key string, val, def any) (Problem, bool) {
	if val == nil {
		return Problem{}, false
	}
	shown := fmt.Sprintf("%v", val)
	if s, ok := val.(string); ok {
		shown = fmt.Sprintf("%q", s)
	}
	bad := func(allowed string) (Problem, bool) {
		return Problem{Source: source, Key: key, Value: shown, Allowed: allowed}, true
	}
	switch def.(type) {
	case int, int64:
		switch x := val.(type) {
		case int, int64, uint64:
			return Problem{}, false
		case float64:
			if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return bad("must be a whole number (it is not rounded or truncated)")
			}
			return Problem{}, false
		case string:
			if _, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
				return Problem{}, false
			}
		}
		return bad(fmt.Sprintf("must be a whole number, e.g. %v", def))
	case float64:
		switch x := val.(type) {
		case int, int64, uint64, float64:
			return Problem{}, false
		case string:
			if _, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
				return Problem{}, false
			}
		}
		return bad(fmt.Sprintf("must be a number, e.g. %v", def))
	case bool:
		switch x := val.(type) {
		case bool:
			return Problem{}, false
		case string:
			if _, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
				return Problem{}, false
			}
		}
		return bad("must be true or false")
	}
	return Problem{}, false
}

// decodeProblems turns mapstructure's joined errors into one Problem each.
func decodeProblems(err error) []Problem {
	var out []Problem
	var joined interface{ Unwrap() []error }
	errs := []error{err}
	if errors.As(err, &joined) {
		errs = joined.Unwrap()
	}
	for _, e := range errs {
		msg := e.Error()
		key := ""
		if i := strings.Index(msg, "'"); i >= 0 {
			if j := strings.Index(msg[i+1:], "'"); j >= 0 {
				key = msg[i+1 : i+1+j]
			}
		}
		out = append(out, Problem{Key: key, Value: "wrong type", Allowed: msg})
	}
	return out
}
