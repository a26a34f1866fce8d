package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// inspect of a store with a key of each limit kind, a key revoked and a
// key rotated out: the table an operator sees, by ID prefix (raw keys
// never reach the store).
func Example_inspect() {
	tmp, err := os.MkdirTemp("", "allot-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "quotas")
	if err := writeStore(dir); err != nil {
		panic(err)
	}
	var out, errs bytes.Buffer
	code := run([]string{"inspect", "--at", "2026-11-29T10:30:00Z", dir}, &out, &errs)
	// The store's id is random, and its generation (the number of its
	// writes) depends on when the engine wrote its reservations.
	storeID := regexp.MustCompile(`store [0-9a-f]{32}, generation \d+`)
	fmt.Print(storeID.ReplaceAllString(out.String(), "store <id>, generation <n>"))
	fmt.Print(strings.ReplaceAll(errs.String(), tmp, "$TMP"))
	fmt.Println("exit status", code)
	// Output:
	// ID                STATE                                                   LIMIT                        REMAINING  FULL IN
	// 11447d93a004678e  active                                                  credits: 300 credits         295        -
	// 16702fc4510b3a80  active                                                  credits: 5000 credits        4901       -
	//                                                                           per-minute: 900 per 1m0s     801        1m0s
	// 319f2804a8c055b3  revoked                                                 credits: 10 credits          10         -
	// 74892fb56a542b34  active                                                  hour: 100 per 1h0m0s         88         30m0s
	// 82d5dff64ca120af  rotated to 11447d93a004678e until 2026-11-30T10:30:00Z  credits: 300 credits         295        -
	// 86e5d56f71e586c9  active                                                  month: 5000 per month (UTC)  4750       37h30m0s
	// a6dfc3098ff3b468  active                                                  credits: 1000 credits        963        -
	// eab725a7a4b6cf1a  active                                                  rate: 10 per 1s, burst 50    30         2s
	// 8 keys (1 revoked, 1 rotated out); store <id>, generation <n>, 8 records
	// exit status 0
}

// A backup, checked, restored into a new directory, and verified there.
func Example_backupRestore() {
	tmp, err := os.MkdirTemp("", "allot-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	if err := writeStore(filepath.Join(tmp, "quotas")); err != nil {
		panic(err)
	}
	// What changes from run to run: the store's id and generation, the
	// time of the backup, and with them its size and sum.
	vary := regexp.MustCompile(`\b(store|generation|taken|sha256) [^,\s]+`)
	size := regexp.MustCompile(`\b\d+ bytes`)
	for _, args := range [][]string{
		{"backup", "$TMP/quotas", "$TMP/quotas.allotbak"},
		{"verify", "$TMP/quotas.allotbak"},
		{"restore", "$TMP/quotas.allotbak", "$TMP/restored"},
		{"verify", "$TMP/restored"},
		{"restore", "$TMP/quotas.allotbak", "$TMP/restored"},
	} {
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "$TMP", tmp)
		}
		var out, errs bytes.Buffer
		code := run(args, &out, &errs)
		text := strings.ReplaceAll(out.String()+errs.String(), tmp, "$TMP")
		fmt.Print(size.ReplaceAllString(vary.ReplaceAllString(text, "$1 …"), "… bytes"))
		fmt.Println("exit status", code)
	}
	// Output:
	// $TMP/quotas.allotbak: store …, generation …, 8 records, taken …, … bytes, sha256 …
	// exit status 0
	// $TMP/quotas.allotbak: sound backup: store …, generation …, 8 records, taken …, … bytes, sha256 …
	// exit status 0
	// $TMP/restored: restored store …, generation …, 8 records, taken …, … bytes, sha256 …
	// exit status 0
	// $TMP/restored: sound: store …, generation …, 8 records (2 revoked, 1 rotated out)
	// exit status 0
	// allot: restoring into $TMP/restored: the directory is not empty (7 entries); restore into an empty or new directory
	// exit status 1
}
