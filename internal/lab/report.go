package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// RunResult is what one run measured.
type RunResult struct {
	// Run numbers the run within its row, from 1.
	Run int `json:"run"`
	// KillAfter is the number of acks the parent waited for before the
	// failure; a few more may have been in the pipe.
	KillAfter int `json:"kill_after"`
	// PowerLoss is the mode of a power-loss run (drop, torn, zero or pages:
	// what became of the bytes not made durable); empty for other failures.
	PowerLoss string `json:"power_loss,omitempty"`
	// Outage is the fault of a queue-outage run (fsync or disk-full),
	// followed by " (never met)" if no producer ran into it.
	Outage string `json:"outage,omitempty"`
	// Acknowledged is the number of SendOKs the parent read; for tx-crash,
	// the number of local transactions that committed (those whose Commit
	// returned SendOK are among them).
	Acknowledged int `json:"acknowledged"`
	// Refused is the number of sends the child was not told are safe: an
	// error, or a status other than SendOK (Queue.Send), or an error
	// (strict producer). They are not acknowledged, so never lost; those
	// found anyway count in UnackedPresent.
	Refused int `json:"refused"`
	// Spooled is the number of acknowledged messages the strict producer
	// spooled instead of getting SendOK (included in Acknowledged).
	Spooled int `json:"spooled"`
	// Counts is the main count.
	Counts
	// CrossCheck is the independent count; it must equal Counts.
	CrossCheck Counts `json:"cross_check"`
	// Groups is, for the produce workload, what each consumer group
	// received after the failure (the main count's; their sums are
	// Undelivered and Isolation).
	Groups []GroupCount `json:"groups,omitempty"`
	// Throughput is in acknowledged messages per second, between the first
	// and the last ack the parent read.
	Throughput float64 `json:"throughput"`
	// RecoveryTime is how long zeroloss.Open and Close took after the
	// failure; for consumer-crash, with the drain of the group in between;
	// for tx-crash, with the wait for the TxChecker to resolve every
	// pending half.
	RecoveryTime time.Duration `json:"recovery_ns"`
	// RecoveryError is set when the queue (for leader-disk-loss, the
	// promoted follower's directory) refused to open after the failure;
	// every acknowledged message then counts as lost.
	RecoveryError string `json:"recovery_error,omitempty"`
	// TxPending is, for tx-crash, the number of half messages pending
	// when the queue reopened after the kill: the ones the TxChecker
	// decided.
	TxPending int `json:"tx_pending,omitempty"`
	// Dir is the run's queue directory when it was kept.
	Dir string `json:"dir,omitempty"`

	// lostBelowKept is the number of lost acknowledged messages whose
	// seq is below the last message recovered: holes, not a lost tail.
	// For the tests (a lag window lost to a leader's disk is a tail).
	lostBelowKept int
}

// CrossCheckAgrees reports whether the two counts of the run agree.
func (r *RunResult) CrossCheckAgrees() bool { return r.Counts == r.CrossCheck }

// Row is one (configuration, failure) pair, aggregated over its runs.
type Row struct {
	Config  string `json:"config"`
	Failure string `json:"failure"`
	// Promised says whether the documentation promises that Config loses
	// no acknowledged message under Failure.
	Promised bool `json:"promised"`
	// Sums over the runs.
	Runs           int `json:"runs"`
	Acknowledged   int `json:"acknowledged"`
	Refused        int `json:"refused"`
	Spooled        int `json:"spooled"`
	Lost           int `json:"lost"`
	Duplicates     int `json:"duplicates"`
	Corrupt        int `json:"corrupt"`
	Phantom        int `json:"phantom"`
	UnackedPresent int `json:"unacked_present"`
	Recovered      int `json:"recovered"`
	Undelivered    int `json:"undelivered"`
	Isolation      int `json:"isolation"`
	// Groups sums, group by group, the runs' GroupCounts (the produce
	// workload's consumer groups; none for the other workloads).
	Groups []GroupCount `json:"groups,omitempty"`
	// OrderViolations: consumer-crash with ack=ordered (see Counts).
	OrderViolations int `json:"order_violations"`
	// RecoveryErrors counts the runs whose queue refused to open.
	RecoveryErrors int `json:"recovery_errors"`
	// CrossCheckMismatches counts the runs whose two counts disagree.
	CrossCheckMismatches int `json:"cross_check_mismatches"`
	// MedianThroughput is the median over the runs of their throughput, in
	// acknowledged messages per second.
	MedianThroughput float64 `json:"median_throughput"`
	// Elapsed is the wall time of the row's runs, recovery and counts
	// included.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Results holds every run.
	Results []RunResult `json:"results"`
}

// Broken reports whether the row breaks a promise: its configuration was
// promised zero loss under its failure, and an acknowledged message was lost
// or came back corrupt, or a message of a transaction that did not commit
// was delivered, or an ordered consumer handled a key's messages out of
// order; or, whatever the configuration, a consumer group did not
// deliver an acknowledged message of its topic that the log holds, or
// delivered one of another topic or of a tag it does not list.
func (r *Row) Broken() bool { return r.lossBroken() || r.topicsBroken() }

// lossBroken: the row lost or corrupted what its configuration was promised
// to keep, delivered a phantom or broke a key's order.
func (r *Row) lossBroken() bool {
	return r.Promised && (r.Lost > 0 || r.Corrupt > 0 || r.Phantom > 0 || r.OrderViolations > 0 || r.RecoveryErrors > 0)
}

// topicsBroken: a group missed a message of its own that the log holds, or
// received another's. Every configuration promises neither happens.
func (r *Row) topicsBroken() bool { return r.Undelivered > 0 || r.Isolation > 0 }

// Report is what Run measured: one Row per (configuration, failure) pair, in
// the order run.
type Report struct {
	Seed       uint64        `json:"seed"`
	RunsPerRow int           `json:"runs_per_row"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	Rows       []Row         `json:"rows"`
	// Skipped lists the (configuration, failure) pairs left out of the
	// run, with the reason of each; the caller fills it (see
	// ScenariosAndSkipped).
	Skipped []Skipped `json:"skipped,omitempty"`
}

// addRow sums row's results into its totals and appends it.
func (rep *Report) addRow(row Row) {
	row.Runs = len(row.Results)
	throughputs := make([]float64, 0, len(row.Results))
	for i := range row.Results {
		res := &row.Results[i]
		row.Acknowledged += res.Acknowledged
		row.Refused += res.Refused
		row.Spooled += res.Spooled
		row.Lost += res.Lost
		row.Duplicates += res.Duplicates
		row.Corrupt += res.Corrupt
		row.Phantom += res.Phantom
		row.OrderViolations += res.OrderViolations
		row.UnackedPresent += res.UnackedPresent
		row.Recovered += res.Recovered
		row.Undelivered += res.Undelivered
		row.Isolation += res.Isolation
		row.Groups = addGroups(row.Groups, res.Groups)
		if res.RecoveryError != "" {
			row.RecoveryErrors++
		}
		if !res.CrossCheckAgrees() {
			row.CrossCheckMismatches++
		}
		throughputs = append(throughputs, res.Throughput)
	}
	row.MedianThroughput = median(throughputs)
	rep.Rows = append(rep.Rows, row)
}

// addGroups adds each of runs' group counts to the sum of the same group in
// sums (appended if it has none yet), and returns sums.
func addGroups(sums, run []GroupCount) []GroupCount {
	for _, g := range run {
		i := slices.IndexFunc(sums, func(s GroupCount) bool { return s.Group == g.Group })
		if i < 0 {
			sums = append(sums, GroupCount{Group: g.Group, Topic: g.Topic, Tags: slices.Clone(g.Tags)})
			i = len(sums) - 1
		}
		s := &sums[i]
		s.Acknowledged += g.Acknowledged
		s.Received += g.Received
		s.Undelivered += g.Undelivered
		s.Isolation += g.Isolation
	}
	return sums
}

// Row returns the row of a configuration label and failure name, or nil.
func (rep *Report) Row(config, failure string) *Row {
	for i := range rep.Rows {
		if rep.Rows[i].Config == config && rep.Rows[i].Failure == failure {
			return &rep.Rows[i]
		}
	}
	return nil
}

// OK reports whether every promise held and every run's two counts agreed.
func (rep *Report) OK() bool {
	for i := range rep.Rows {
		if rep.Rows[i].Broken() || rep.Rows[i].CrossCheckMismatches > 0 {
			return false
		}
	}
	return true
}

// WriteTable writes the report as the table a newcomer reads: the columns
// that say what each row lost and whether it kept its promise (config,
// failure, acked, lost, dups, what the topics' groups got, msgs/s and a short
// verdict), one line per row, then a short legend and the seed (with the
// runs per row). For the default set of rows every
// line fits in 100 columns (longer configuration labels, as --all's, widen
// the config column). WriteWideTable, WriteJSON and the HTML report have
// every column.
func (rep *Report) WriteTable(w io.Writer) error {
	t := table{header: ShortTableColumns}
	notes := ShortTableNotes
	for i := range rep.Rows {
		r := &rep.Rows[i]
		t.add(r.Config, r.Failure, r.Acknowledged, r.Lost, r.Duplicates, r.TopicsSummary(), int(math.Round(r.MedianThroughput)), r.ShortVerdict())
		if (r.RecoveryErrors > 0 || r.CrossCheckMismatches > 0) && len(notes) == len(ShortTableNotes) {
			notes = append(slices.Clone(notes), shortVerdictNote)
		}
	}
	return rep.writeTable(w, &t, notes)
}

// WriteWideTable writes the report as a table of every column (as WriteJSON
// and the HTML report have them), one line per row, then the full legend
// and the seed.
func (rep *Report) WriteWideTable(w io.Writer) error {
	t := table{header: TableColumns}
	for i := range rep.Rows {
		r := &rep.Rows[i]
		t.add(r.Config, r.Failure, r.Runs, r.Acknowledged, r.Refused, r.Lost, r.Duplicates, r.Corrupt, r.Phantom,
			r.Undelivered, r.Isolation, r.OrderViolations, r.UnackedPresent, r.Recovered, int(math.Round(r.MedianThroughput)), r.CrossCheck(), r.Verdict())
	}
	return rep.writeTable(w, &t, TableNotes)
}

// writeTable writes t, with text to the left and numbers to the right, then
// notes, the seed and the skipped pairs.
func (rep *Report) writeTable(w io.Writer, t *table, notes []string) error {
	var b strings.Builder
	t.write(&b)
	b.WriteString("\n")
	for _, note := range notes {
		b.WriteString(note + "\n")
	}
	fmt.Fprintf(&b, "seed %d, %d runs per row, %s\n", rep.Seed, rep.RunsPerRow, rep.Elapsed.Round(100*time.Millisecond))
	writeSkipped(&b, rep.Skipped)
	_, err := io.WriteString(w, b.String())
	return err
}

// TableColumns are the columns of the report's wide table, and TableNotes
// its legend, for WriteWideTable and the HTML report.
var (
	TableColumns = []string{"config", "failure", "runs", "acknowledged", "refused", "lost", "duplicates",
		"corrupt", "phantom", "undelivered", "isolation", "order", "unacked", "recovered", "msgs/s", "cross-check", "verdict"}
	TableNotes = []string{
		"acknowledged: SendOK (strict producer: also spooled); refused: sends answered with an error or another status, not acknowledged, never counted lost.",
		"lost: acknowledged but missing after recovery (leader-disk-loss: from the promoted follower); consumer-crash: never handled; tx-crash: committed locally, not delivered.",
		"duplicates: found (consumer-crash: handled) more than once; corrupt: body does not match its ID; phantom: delivered, local transaction did not commit (reference rows: an entry read back that nobody wrote).",
		"undelivered: acknowledged, in the recovered log, but not delivered by a consumer group of its topic (and tag); isolation: deliveries of a message of another topic, or of a tag the group does not list. Every configuration promises both 0. The rows whose child sends (process-crash, power-loss, leader-disk-loss, queue-outage) send to 4 topics, each with a group, one of them with a second, tag-filtered group; JSON and HTML count each group.",
		"unacked: found but never acknowledged (allowed); msgs/s: median over the runs of acks per second.",
		"order (ack=ordered): handlings of a message first handled after a later message of its key.",
		"cross-check: a second, independent count (raw segment files; consumer-crash: the processed file before the drain plus what the drain received; jetstream rows: every stream sequence read directly, not through a consumer).",
		"A verdict that ends with \"refused to open: N\" counts N runs whose directory did not open after the failure: all their acknowledged messages count as lost.",
	}
)

// ShortTableColumns are the columns of WriteTable, and ShortTableNotes its
// legend: each note fits in 100 columns.
var (
	ShortTableColumns = []string{"config", "failure", "acked", "lost", "dups", "topics", "msgs/s", "verdict"}
	ShortTableNotes   = []string{
		"acked: acknowledged (SendOK; strict producer: also spooled; tx-crash: committed locally).",
		"lost: acked but missing after recovery; dups: read (consumer-crash: handled) more than once.",
		"topics: 4 topics, a group each, one more with a tag filter; ok: each group delivered all its acked",
		"messages in the log and no other; N bad: N missed or crossed (see --wide); -: no topics.",
		"msgs/s: median over the runs of acks per second.",
		"ok: zero loss, as promised; measured: no promise, the loss is measured; BROKEN: promise broken.",
		"--wide, --json and --html add refused, corrupt, phantom, undelivered, isolation, order, unacked,",
		"recovered and the cross-check; --json and --html count each group.",
	}
	// shortVerdictNote is added to ShortTableNotes when a verdict says it.
	shortVerdictNote = "N unopened: N runs whose directory did not open (all their acks lost); counts differ: see --wide."
)

// CrossCheck returns "agrees", or "DISAGREES(n)" when the two counts
// disagreed in n runs.
func (r *Row) CrossCheck() string {
	if r.CrossCheckMismatches > 0 {
		return fmt.Sprintf("DISAGREES(%d)", r.CrossCheckMismatches)
	}
	return "agrees"
}

// Verdict says in a few words whether the row kept its promise, and how
// many of its runs found a directory that refused to open.
func (r *Row) Verdict() string {
	v := "measured (no promise)"
	switch {
	case r.lossBroken() && r.topicsBroken():
		v = "BROKEN: promised zero loss; a group missed or crossed topics"
	case r.lossBroken():
		v = "BROKEN: promised zero loss"
	case r.topicsBroken():
		v = "BROKEN: a group missed or crossed topics"
	case r.Promised:
		v = "ok: zero loss, as promised"
	}
	if r.RecoveryErrors > 0 {
		v += fmt.Sprintf("; refused to open: %d", r.RecoveryErrors)
	}
	return v
}

// ShortVerdict is Verdict in fewer words, for WriteTable: "ok: zero loss",
// "measured" or "BROKEN", followed by ", N unopened" when N runs found a
// directory that refused to open, and ", counts differ" when the two counts
// disagreed in a run.
func (r *Row) ShortVerdict() string {
	v := "measured"
	switch {
	case r.Broken():
		v = "BROKEN"
	case r.Promised:
		v = "ok: zero loss"
	}
	if r.RecoveryErrors > 0 {
		v += fmt.Sprintf(", %d unopened", r.RecoveryErrors)
	}
	if r.CrossCheckMismatches > 0 {
		v += ", counts differ"
	}
	return v
}

// TopicsSummary says in a few characters, for WriteTable, what the consumer
// groups of the row's topics got: "ok" (each delivered all its acknowledged
// messages that the log holds, and no other), "N bad" (N = Undelivered +
// Isolation) or "-" for a row without topics.
func (r *Row) TopicsSummary() string {
	switch {
	case len(r.Groups) == 0:
		return "-"
	case r.topicsBroken():
		return fmt.Sprintf("%d bad", r.Undelivered+r.Isolation)
	}
	return "ok"
}

// Summary says in one line what the row measured: its configuration and
// failure, runs, acknowledged and lost messages, and verdict.
func (r *Row) Summary() string {
	return fmt.Sprintf("%s %s: %d runs, %d acknowledged, %d lost, %s", r.Config, r.Failure, r.Runs, r.Acknowledged, r.Lost, r.Verdict())
}

// writeSkipped writes the skipped pairs grouped by reason: one line per
// reason with the number of pairs, then the pairs.
func writeSkipped(b *strings.Builder, skipped []Skipped) {
	if len(skipped) == 0 {
		return
	}
	var reasons []string
	byReason := map[string][]string{}
	for _, s := range skipped {
		if _, ok := byReason[s.Reason]; !ok {
			reasons = append(reasons, s.Reason)
		}
		byReason[s.Reason] = append(byReason[s.Reason], s.Config+" "+s.Failure)
	}
	fmt.Fprintf(b, "\nskipped %d (configuration, failure) pairs that do not apply:\n", len(skipped))
	for _, reason := range reasons {
		pairs := byReason[reason]
		fmt.Fprintf(b, "- %d: %s:\n    %s\n", len(pairs), reason, strings.Join(pairs, ", "))
	}
}

// table aligns cells in columns: text to the left, integers to the right.
type table struct {
	header []string
	rows   [][]any // string or int cells
}

func (t *table) add(cells ...any) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	widths := make([]int, len(t.header))
	right := make([]bool, len(t.header)) // a column of integers
	for c, h := range t.header {
		widths[c] = len(h)
	}
	text := make([][]string, len(t.rows))
	for r, row := range t.rows {
		text[r] = make([]string, len(row))
		for c, cell := range row {
			_, right[c] = cell.(int)
			text[r][c] = fmt.Sprint(cell)
			widths[c] = max(widths[c], len(text[r][c]))
		}
	}
	for _, cells := range append([][]string{t.header}, text...) {
		var line strings.Builder
		for c, cell := range cells {
			pad := strings.Repeat(" ", widths[c]-len(cell))
			if c > 0 {
				line.WriteString("  ")
			}
			if right[c] {
				line.WriteString(pad + cell)
			} else {
				line.WriteString(cell + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// WriteJSON writes the report, every run included, as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none. It sorts a copy.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}
