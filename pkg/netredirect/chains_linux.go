package netredirect

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// journal records how to undo what a Setup has added so far, so that a
// Setup failing half-way leaves nothing behind. A nil journal records
// nothing (the periodic reconcile keeps what it repairs).
type journal struct{ undo []func() error }

func (j *journal) add(f func() error) {
	if j != nil {
		j.undo = append(j.undo, f)
	}
}

// rollback runs the undo steps in reverse order, continuing past errors.
func (j *journal) rollback() error {
	var errs []error
	for i := len(j.undo) - 1; i >= 0; i-- {
		errs = append(errs, j.undo[i]())
	}
	j.undo = nil
	return errors.Join(errs...)
}

// listTable lists and parses one table.
func listTable(ipt iptablesAPI, table string) (tableState, error) {
	lines, err := ipt.ListTable(table)
	if err != nil {
		return tableState{}, err
	}
	return parseTable(lines)
}

// ensureTable converges table to the planned rules: each owned chain exists
// and holds exactly its planned rules in order, each built-in chain holds
// exactly one copy of its planned jump, and nothing else of ours (stale
// jumps, chains no longer planned) remains. New rules go in before stale ones
// are deleted, so traffic is never left without a redirect. It returns what
// it changed.
func ensureTable(ipt iptablesAPI, table string, plan []Rule, j *journal) ([]string, error) {
	st, err := listTable(ipt, table)
	if err != nil {
		return nil, err
	}
	var changes []string
	planned := map[string]bool{} // owned chains in the plan
	for _, r := range plan {
		if r.Table == table && r.Position == 0 {
			planned[r.Chain] = true
		}
	}
	// Owned chains and their contents.
	for _, chain := range sortedKeys(planned) {
		if !st.hasChain(chain) {
			if err := ipt.NewChain(table, chain); err != nil {
				return changes, fmt.Errorf("creating chain %s/%s: %w", table, chain, err)
			}
			j.add(func() error { return deleteChain(ipt, table, chain) })
			changes = append(changes, table+"/"+chain+" chain")
		}
		var want []Rule
		for _, r := range plan {
			if r.Table == table && r.Chain == chain {
				want = append(want, r)
			}
		}
		have := st.rules[chain]
		if slices.Equal(have, specs(want)) {
			continue
		}
		for _, r := range want {
			if err := ipt.Append(table, chain, r.Args...); err != nil {
				return changes, fmt.Errorf("appending %q to %s/%s: %w", r.Args, table, chain, err)
			}
			j.add(func() error { return deleteRule(ipt, table, chain, r.Args) })
		}
		// Our chain: nobody else's rules can sit between, so the first
		// len(have) rules are exactly the stale ones.
		for range have {
			if err := ipt.DeleteById(table, chain, 1); err != nil {
				return changes, fmt.Errorf("deleting a stale rule from %s/%s: %w", table, chain, err)
			}
		}
		changes = append(changes, table+"/"+chain+" rules")
	}
	// Jumps: insert the missing ones first.
	for _, r := range plan {
		if r.Table != table || r.Position == 0 || slices.Contains(st.rules[r.Chain], joinArgs(r.Args)) {
			continue
		}
		if err := ipt.Insert(table, r.Chain, r.Position, r.Args...); err != nil {
			return changes, fmt.Errorf("inserting %q in %s/%s: %w", r.Args, table, r.Chain, err)
		}
		j.add(func() error { return deleteRule(ipt, table, r.Chain, r.Args) })
		changes = append(changes, table+"/"+r.Chain+" jump")
	}
	// Then every other reference to an owned chain: duplicates, stale
	// variants, jumps to chains no longer planned.
	for _, chain := range st.chains {
		if owned(chain) {
			continue
		}
		kept := map[string]bool{}
		for _, spec := range st.rules[chain] {
			if !owned(jumpTarget(spec)) {
				continue
			}
			if isPlannedJump(plan, table, chain, spec) && !kept[spec] {
				kept[spec] = true
				continue
			}
			if err := deleteSpec(ipt, table, chain, spec); err != nil {
				return changes, err
			}
			changes = append(changes, table+"/"+chain+" stale jump")
		}
	}
	for _, chain := range st.chains {
		if owned(chain) && !planned[chain] {
			if err := deleteChain(ipt, table, chain); err != nil {
				return changes, err
			}
			changes = append(changes, table+"/"+chain+" stale chain")
		}
	}
	return changes, nil
}

func isPlannedJump(plan []Rule, table, chain, spec string) bool {
	for _, r := range plan {
		if r.Table == table && r.Chain == chain && r.Position > 0 && joinArgs(r.Args) == spec {
			return true
		}
	}
	return false
}

// removeOwned deletes, from one table, every rule that jumps to an owned
// chain and then every owned chain, continuing past errors. It returns what
// it removed.
func removeOwned(ipt iptablesAPI, table string) ([]string, error) {
	present, err := ipt.TablePresent(table)
	if err != nil || !present {
		return nil, err
	}
	st, err := listTable(ipt, table)
	if err != nil {
		return nil, err
	}
	rm := ownedIn(st)
	if rm.empty() {
		return nil, nil
	}
	if r, ok := ipt.(restorer); ok && r.Restore(rm.restoreInput(table)) == nil {
		return rm.names(table), nil
	}
	// No restore command, or the transaction failed (it then changed
	// nothing): one command at a time, which tolerates rules that went
	// away meanwhile.
	var (
		removed []string
		errs    []error
	)
	for _, j := range rm.jumps {
		if err := deleteSpec(ipt, table, j.chain, j.spec); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, table+"/"+j.chain+" jump")
	}
	for _, chain := range rm.chains {
		if err := deleteChain(ipt, table, chain); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, table+"/"+chain+" chain")
	}
	return removed, errors.Join(errs...)
}

// removal is what of ours a table holds: the rules of other chains that
// jump to an owned chain, and the owned chains.
type removal struct {
	jumps  []struct{ chain, spec string }
	chains []string
}

func ownedIn(st tableState) removal {
	var rm removal
	for _, chain := range st.chains {
		if owned(chain) {
			rm.chains = append(rm.chains, chain)
			continue
		}
		for _, spec := range st.rules[chain] {
			if owned(jumpTarget(spec)) {
				rm.jumps = append(rm.jumps, struct{ chain, spec string }{chain, spec})
			}
		}
	}
	return rm
}

func (rm removal) empty() bool { return len(rm.jumps)+len(rm.chains) == 0 }

// names says what rm removes, as removeOwned reports it.
func (rm removal) names(table string) []string {
	var out []string
	for _, j := range rm.jumps {
		out = append(out, table+"/"+j.chain+" jump")
	}
	for _, c := range rm.chains {
		out = append(out, table+"/"+c+" chain")
	}
	return out
}

// restoreInput is rm as one iptables-restore transaction: the jumps
// deleted, every owned chain flushed before any is deleted.
func (rm removal) restoreInput(table string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", table)
	for _, j := range rm.jumps {
		fmt.Fprintf(&b, "-D %s %s\n", j.chain, j.spec)
	}
	for _, c := range rm.chains {
		fmt.Fprintf(&b, "-F %s\n", c)
	}
	for _, c := range rm.chains {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// restorer is an iptablesAPI that applies iptables-restore input without
// flushing the tables it names: the changes to one table in one
// transaction. Removal uses it, since every deleting command waits for the
// kernel to let go of the old rules, and one command per change made a stop
// take a third of a second. arptables-restore cannot leave the rest of a
// table alone, so arptables is not a restorer.
type restorer interface {
	Restore(input string) error
}

// detectTables are the tables whose contents show which backend other
// software uses: Docker and firewalls fill nat and filter, and kubelet marks
// its backend with an empty KUBE-IPTABLES-HINT chain in mangle.
var detectTables = []string{"nat", "filter", "mangle"}

// countForeign counts the rules and user chains in table that are not ours,
// for backend detection. A table that is not present counts as empty.
func countForeign(ipt iptablesAPI, table string) (int, error) {
	present, err := ipt.TablePresent(table)
	if err != nil || !present {
		return 0, err
	}
	st, err := listTable(ipt, table)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, chain := range st.chains {
		if owned(chain) {
			continue
		}
		if !slices.Contains(builtins[table], chain) {
			n++
		}
		for _, s := range st.rules[chain] {
			if !owned(jumpTarget(s)) {
				n++
			}
		}
	}
	return n, nil
}

// builtins are the built-in chains of the tables the package reads.
var builtins = map[string][]string{
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
}

func deleteSpec(ipt iptablesAPI, table, chain, spec string) error {
	args, err := splitArgs(spec)
	if err != nil {
		return err
	}
	return deleteRule(ipt, table, chain, args)
}

// deleteRule deletes one rule; one that is already gone counts as deleted.
func deleteRule(ipt iptablesAPI, table, chain string, args []string) error {
	if err := ipt.Delete(table, chain, args...); err != nil && !isNotExist(err) {
		return fmt.Errorf("deleting %q from %s/%s: %w", args, table, chain, err)
	}
	return nil
}

// deleteChain flushes and deletes a chain; a missing chain counts as deleted.
func deleteChain(ipt iptablesAPI, table, chain string) error {
	if err := ipt.ClearAndDeleteChain(table, chain); err != nil && !isNotExist(err) {
		return fmt.Errorf("deleting chain %s/%s: %w", table, chain, err)
	}
	return nil
}

func specs(rules []Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = joinArgs(r.Args)
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
