# bash completion for fusekit: commands, subcommands, options and their choices, read from the
# program's own --help at completion time (so it always matches the binary being completed);
# file names where an option takes a path. Installed by make install as
# share/bash-completion/completions/fusekit; or: source tools/completion/fusekit.bash

# The command list ("commands:") or a command's subcommands ("subcommands:") of a --help text.
_fusekit_list() { awk -v h="$1" '$0 == h ":" { c = 1; next } c && /^  [a-z]/ { print $1 }'; }
# Every option name of a --help text's rows ("  -o|--out TEXT  ...").
_fusekit_opts() { awk '$1 ~ /^-/ { n = split($1, s, "|"); for (i = 1; i <= n; i++) print s[i] }'; }
# The row of option $1.
_fusekit_row() { awk -v o="$1" '$1 ~ /^-/ { n = split($1, s, "|"); for (i = 1; i <= n; i++) if (s[i] == o) { print; exit } }'; }

_fusekit() {
    local prog=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} help row meta choices
    COMPREPLY=()
    if ((COMP_CWORD == 1)); then
        COMPREPLY=($(compgen -W "$("$prog" --help 2>/dev/null | _fusekit_list commands) --help --version" -- "$cur"))
        return
    fi
    help=$("$prog" "${COMP_WORDS[1]}" --help 2>/dev/null) || return
    if grep -q '^subcommands:' <<<"$help"; then
        if ((COMP_CWORD == 2)); then
            COMPREPLY=($(compgen -W "$(_fusekit_list subcommands <<<"$help")" -- "$cur"))
            return
        fi
        help=$("$prog" "${COMP_WORDS[1]}" "${COMP_WORDS[2]}" --help 2>/dev/null) || return
    fi
    if [[ $prev == -* ]]; then
        row=$(_fusekit_row "$prev" <<<"$help")
        meta=$(awk '{ print $2 }' <<<"$row")
        if [[ $meta =~ ^[A-Z][A-Z0-9_=]*(\.\.\.)?$ ]]; then  # the option takes a value
            choices=$(grep -o '\[[a-z0-9_.+-]*\(|[a-z0-9_.+-]*\)\+\]$' <<<"$row" | tr -d '[]' | tr '|' ' ')
            if [[ -n $choices ]]; then
                COMPREPLY=($(compgen -W "$choices" -- "$cur"))
            elif [[ ${meta%...} =~ ^(FILE|DIR|MODEL|TOKENIZER)$ ]]; then  # a path
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            return
        fi
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_fusekit_opts <<<"$help")" -- "$cur"))
    else
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _fusekit fusekit
