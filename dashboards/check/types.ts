// What an Archipel dashboard must be: Grafana's own `Dashboard` (from @grafana/schema), narrowed
// where the dashboards promise more than Grafana requires. check.mjs writes each dashboard's JSON
// as a typed literal, so tsc checks every field against these types, and rejects a field that no
// type names (excess property checks), which a plain JSON import would not do.

import type { DataQuery, Dashboard, FieldConfigSource, GridPos, Panel, VariableModel } from '@grafana/schema';
import type {
  FieldConfig as TimeSeriesFieldConfig,
  Options as TimeSeriesOptions,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';

/** `T` with every string enum replaced by the union of its values: Grafana's types use TypeScript
 * string enums (`ThresholdsMode.Absolute`), which a JSON literal's `"absolute"` does not satisfy
 * though it is the very value Grafana stores. Tuples and optional fields keep their shape. */
type Plain<T> = T extends string ? `${T}` : T extends object ? { [K in keyof T]: Plain<T[K]> } : T;

/** Every panel and query goes to the data source the `datasource` variable picks. */
export type FromVariable = { type: 'prometheus'; uid: '${datasource}' };

/** A Prometheus query, as Grafana's Prometheus data source stores it (its type is not in
 * @grafana/schema). */
export interface PromQuery extends DataQuery {
  refId: string;
  datasource: FromVariable;
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  editorMode?: 'code' | 'builder';
}

/** What every panel carries, whatever its kind. */
type Common = Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets'> & {
  id: number;
  title: string;
  description: string;
  gridPos: GridPos;
  datasource: FromVariable;
  targets: [PromQuery, ...PromQuery[]];
};

export type TimeSeriesPanel = Common & {
  type: 'timeseries';
  options: TimeSeriesOptions;
  fieldConfig: FieldConfigSource<TimeSeriesFieldConfig>;
};

export type StatPanel = Common & {
  type: 'stat';
  options: StatOptions;
  fieldConfig: FieldConfigSource;
};

export type Variable = VariableModel &
  ({ type: 'datasource'; query: 'prometheus' } | { type: 'query'; datasource: FromVariable; query: string });

export type ArchipelDashboard = Plain<
  Omit<Dashboard, 'panels' | 'templating'> & {
    uid: string;
    title: string;
    panels: Array<TimeSeriesPanel | StatPanel>;
    templating: { list: [Variable & { name: 'datasource' }, ...Variable[]] };
  }
>;
