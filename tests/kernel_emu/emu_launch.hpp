// Type-erased entry points for the emulated kernels: the registry a generated module file lists
// with EMU_ENTRY(name), and the argument-kind strings emu_launch checks the launch against.
#pragma once
#include <stddef.h>

#include <type_traits>
#include <utility>

// 'p' pointer, 'i' 32-bit integer, 'l' 64-bit integer, 'f' float, 'd' double (the kinds the
// Rust side's plan::Arg can pass).
template <typename T> constexpr char emu_kind() {
  return std::is_pointer<T>::value                            ? 'p'
         : std::is_same<T, float>::value                      ? 'f'
         : std::is_same<T, double>::value                     ? 'd'
         : (std::is_integral<T>::value && sizeof(T) == 4)     ? 'i'
         : (std::is_integral<T>::value && sizeof(T) == 8)     ? 'l'
                                                              : '?';
}

template <typename... A, size_t... I>
void emu_call(void (*f)(A...), void** args, std::index_sequence<I...>) {
  f(*static_cast<typename std::remove_cv<A>::type*>(args[I])...);
}

template <auto F> struct EmuEntry;
template <typename... A, void (*F)(A...)> struct EmuEntry<F> {
  static void invoke(void** args) { emu_call(F, args, std::index_sequence_for<A...>{}); }
  static const char* kinds() {
    static const char k[] = {emu_kind<A>()..., 0};
    return k;
  }
};

struct EmuReg {
  const char* name;
  void (*invoke)(void**);
  const char* (*kinds)();
};

#define EMU_ENTRY(f) {#f, &EmuEntry<&f>::invoke, &EmuEntry<&f>::kinds},
