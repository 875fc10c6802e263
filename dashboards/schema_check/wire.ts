// Types the generated dashboard modules are checked against (see ../build.py render_ts).
import type { Panel } from "@grafana/schema";

// Dashboard JSON carries an enum's value ("absolute"), never an enum member (ThresholdsMode.Absolute):
// Wire<T> is T with every string enum widened to the union of its literal values.  Numeric enums
// already accept their literal values; `any` and `unknown` stay as they are.
export type Wire<T> = 0 extends 1 & T
  ? T
  : T extends string
    ? `${T}`
    : T extends number | boolean | null | undefined
      ? T
      : T extends ReadonlyArray<infer U>
        ? Array<Wire<U>>
        : T extends object
          ? { [K in keyof T]: Wire<T[K]> }
          : T;

// A panel whose options and custom field config are those of one panel plugin (the Dashboard type
// leaves `options` as an open record).
export type PanelOf<TOptions, TFieldConfig> = Omit<Panel<TOptions, TFieldConfig>, "options"> & {
  options?: TOptions;
};
