package filter_test

import (
	"encoding/json"
	"fmt"

	"github.com/heraldhq/herald/internal/filter"
)

func ExampleParse() {
	f, err := filter.Parse(json.RawMessage(`{"all":[
		{"tag":"region","in":["us","eu"]},
		{"not":{"tag":"muted","exists":true}}]}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Key())
	fmt.Println(f.Match(map[string]string{"region": "eu"}))
	fmt.Println(f.Match(map[string]string{"region": "eu", "muted": "1"}))

	_, err = filter.Parse(json.RawMessage(`{"all":[{"tag":"a","eq":"b"},{"tag":"c","in":[]}]}`))
	fmt.Println(err)
	// Output:
	// {"all":[{"tag":"region","in":["eu","us"]},{"not":{"tag":"muted","exists":true}}]}
	// true
	// false
	// bad_request: filter: "in" needs at least one value (at all[1])
}
